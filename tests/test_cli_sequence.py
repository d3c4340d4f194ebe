"""`facelift-nb sequence`: a synthetic rig recording (six RGBA frame folders and a camera file in a phone's world) and
a small video, run through the command; resumed runs, and every wrong input ending in one line and exit status 2."""
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch
from PIL import Image

from facelift_nb.builtin import WEIGHTS_DIR, default_weights_available
from facelift_nb.cameras import orbit
from facelift_nb.cli import main
from facelift_nb.layouts import get_layout
from facelift_nb.pipeline import FaceLiftPipeline, load_gslrm
from facelift_nb.sequence import reconstruct_rig_sequence
from facelift_nb.synthetic import make_subject, phone_world, render_views, save_rgba

pytestmark = pytest.mark.skipif(not default_weights_available(), reason="the built-in weights are not installed")

ORDER = (3, 0, 5, 1, 4, 2)  # the facelift6 slots in the camera file's order: camera 1 faces the subject
N_FRAMES, SIZE, FPS = 4, 64, 12
REPO = Path(__file__).resolve().parents[1]


def _moving_head(f: int):
    "The subject of frame `f`: a head moving sideways, 0.02 units a frame."
    head = make_subject(3, "head", density=0.3)
    return dataclasses.replace(head, means=head.means + torch.tensor([0.02 * f, 0., 0.]))


@pytest.fixture(scope="module")
def rig_src(tmp_path_factory) -> Path:
    "cameras.json (phone world, metres, file order ORDER; file_path cam_NN) and cam_NN/frame_NNNNN.png + frames.json."
    root = tmp_path_factory.mktemp("rig_src")
    az = get_layout("facelift6").azimuths_deg
    truth = orbit([az[k] for k in ORDER], 0., 2.7, 50., (SIZE, SIZE))  # the FaceLift world the frames are made in
    for f in range(N_FRAMES):
        views = render_views(_moving_head(f), truth)  # [V, H, W, 4]
        for c in range(len(ORDER)): save_rgba(views[c], root / f"cam_{c:02d}" / f"frame_{f:05d}.png")
    for c in range(len(ORDER)): (root / f"cam_{c:02d}" / "frames.json").write_text(json.dumps({"fps": FPS}))
    rig = dataclasses.replace(truth.transform(phone_world()), meta=tuple({"file_path": f"cam_{c:02d}"}
                                                                         for c in range(len(ORDER))))
    rig.to_facelift_json(root / "cameras.json")
    return root


@pytest.fixture
def rig(rig_src, tmp_path) -> Path:
    "A fresh copy of the recording (the bad-input cases break it)."
    return Path(shutil.copytree(rig_src, tmp_path / "rig"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    "An H.264 video of the front view, 64², 4 frames at 8 fps."
    front = orbit([0.], 0., 2.7, 50., (SIZE, SIZE))
    frames = []
    for f in range(N_FRAMES):
        x = render_views(_moving_head(f), front)[0]
        rgb = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])  # over white
        frames.append((rgb * 255 + 0.5).to(torch.uint8).numpy())
    path = tmp_path_factory.mktemp("video") / "front.mp4"
    imageio.mimwrite(path, frames, fps=8, macro_block_size=1)
    return path


def _rig_args(rig: Path, out: Path, *more) -> list[str]:
    return ["sequence", "--cameras", str(rig / "cameras.json"), "-o", str(out), "--default", "--front-camera", "1",
            *more]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_rig_runs_resumes_and_matches_the_library(rig, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_rig_args(rig, out)) == 0
    line = _one_line(capsys)
    assert line.startswith(f"{N_FRAMES} frames ({N_FRAMES} computed, 0 kept from an earlier run), ")
    assert f"Gaussians a frame -> {out}; stability " in line
    files = _files(out)
    assert {f"frames/frame_{i:05d}.ply" for i in range(N_FRAMES)} <= set(files)
    assert {"index.json", "run.json", "videos/fixed.mp4", "videos/orbit.mp4", "videos/side_by_side.mp4",
            "videos/stability.json"} <= set(files)
    index = json.loads(files["index.json"])
    assert index["rig"]["indices"] == [1, 3, 5, 0, 4, 2]  # --front-camera 1: each slot found its camera
    assert [f["frame"] for f in index["frames"]] == list(range(N_FRAMES))
    ratio = json.loads(files["videos/stability.json"])["ratio"]
    assert f"stability {ratio:.2f} " in line
    # the command runs the library's chain with the library's defaults
    gslrm, wman = load_gslrm(WEIGHTS_DIR / "gslrm")
    ref = reconstruct_rig_sequence(gslrm, rig / "cameras.json", tmp_path / "ref", front_camera=1, videos=False,
                                   weights=wman, progress=False)
    assert all(_files(tmp_path / "ref")[f"frames/frame_{i:05d}.ply"] == files[f"frames/frame_{i:05d}.ply"]
               for i in ref.frames)
    assert (tmp_path / "ref" / "run.json").read_bytes() == files["run.json"]  # the same settings, all of them
    # a second run computes nothing and changes no frame
    plys = {p: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    assert main(_rig_args(rig, out)) == 0
    assert _one_line(capsys).startswith(f"{N_FRAMES} frames (0 computed, {N_FRAMES} kept from an earlier run), ")
    assert _files(out) == files  # every byte, the re-rendered videos too
    assert {p: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == plys


def test_rig_with_explicit_inputs_and_options(rig, tmp_path, capsys):
    out = tmp_path / "out"
    inputs = [str(rig / f"cam_{c:02d}") for c in range(len(ORDER))]
    assert main(["sequence", *inputs, "--cameras", str(rig / "cameras.json"), "-o", str(out), "--default",
                 "--front-camera", "1", "--layout", "none", "--center-from", "axes", "--every", "2", "--batch", "2",
                 "--no-videos"]) == 0
    line = _one_line(capsys)
    assert line.startswith("2 frames (2 computed, 0 kept") and "stability" not in line
    index = json.loads((out / "index.json").read_text())
    assert (index["selected_frames"], index["batch"], index["center_from"]) == ([0, 2], 2, "axes")
    assert index["rig"]["indices"] == list(range(len(ORDER)))  # --layout none: every camera, in file order
    assert sorted(p.name for p in (out / "frames").glob("*.ply")) == ["frame_00000.ply", "frame_00002.ply"]
    assert not (out / "videos").exists()


def test_one_video_through_the_pipeline(video, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sequence", str(video), "-o", str(out), "--default", "--steps", "2", "--render-size", "32"]
    assert main(args) == 0
    line = _one_line(capsys)
    assert line.startswith(f"{N_FRAMES} frames ({N_FRAMES} computed, 0 kept") and "stability" in line
    files = _files(out)
    assert {f"frames/frame_{i:05d}.ply" for i in range(N_FRAMES)} <= set(files)
    assert {"index.json", "videos/fixed.mp4", "videos/orbit.mp4", "videos/side_by_side.mp4"} <= set(files)
    index = json.loads(files["index.json"])
    assert (index["kind"], index["num_inference_steps"], index["seed"], index["fresh_noise"]) == ("video", 2, 4, False)
    FaceLiftPipeline.default().sequence(video, tmp_path / "ref", num_inference_steps=2, videos=False, progress=False)
    ref = _files(tmp_path / "ref")
    assert ref["run.json"] == files["run.json"] and all(ref[k] == files[k] for k in ref if k.endswith(".ply"))
    assert main(args) == 0
    assert _one_line(capsys).startswith(f"{N_FRAMES} frames (0 computed, {N_FRAMES} kept")
    again = _files(out)
    assert {k: v for k, v in again.items() if k.startswith("frames/") or k == "index.json"} == \
           {k: v for k, v in files.items() if k.startswith("frames/") or k == "index.json"}


# ---------------------------------------------------------------- wrong input: one line, exit 2, nothing written
def _break(rig: Path, case: str) -> None:
    "Damage the recording the way `case` says."
    if case == "frame counts": (rig / "cam_03" / "frame_00003.png").unlink()
    if case == "dropped": (rig / "cam_02" / "frame_00003.png").rename(rig / "cam_02" / "frame_00004.png")
    if case == "vfr": (rig / "cam_01" / "frames.json").write_text(json.dumps({"times_s": [0, .08, .2, .25]}))
    if case == "sizes": Image.new("RGBA", (48, 48)).save(rig / "cam_04" / "frame_00001.png")
    if case == "calibration":
        for p in (rig / "cam_05").glob("*.png"): Image.new("RGBA", (48, 48)).save(p)
    if case == "no fps": (rig / "cam_00" / "frames.json").unlink()
    if case == "no file_path":
        doc = json.loads((rig / "cameras.json").read_text())
        for fr in doc["frames"]: fr.pop("file_path", None)
        (rig / "cameras.json").write_text(json.dumps(doc))


RIG_CASES = {  # case: (extra arguments, a piece of the error line)
    "frame counts": ((), "different frame counts: cam_03 3, cam_00 4"),
    "dropped": ((), "dropped frames: the numbers jump 2 -> 4"),
    "vfr": ((), "variable frame rate"),
    "sizes": ((), "mismatched sizes"),
    "calibration": ((), "calibrated for 64x64"),
    "no fps": ((), "has no frame rate"),
    "no file_path": ((), "do not name their videos"),
    "fps differs": (("--fps", "10"), "frames.json says 12"),
    "start": (("--start", "4"), "need 0 <= start < end <= 4"),
    "end": (("--end", "9"), "got start=0, end=9"),
    "start after end": (("--start", "3", "--end", "2"), "got start=3, end=2"),
    "every": (("--every", "0"), "argument --every: expected an integer >= 1"),
    "not normalized": (("--no-normalize",), "drop --no-normalize"),
    "video option": (("--steps", "4"), "--steps is an option of one video"),
    "two models": (("--gslrm", "x.pt"), "either --default or --gslrm"),
    "missing camera file": (("--cameras", "nope.json"), "no camera file or folder 'nope.json'"),
}


def _assert_refused(capsys, argv, piece) -> str:
    try: rc = main(argv)
    except SystemExit as e: rc = e.code  # argparse's usage errors
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in cap.err and not cap.out, (argv, rc, cap)
    assert lines[0].startswith("facelift-nb") and ": error: " in lines[0], lines[0]
    assert piece in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(RIG_CASES))
def test_rig_bad_input(rig, tmp_path, capsys, case):
    _break(rig, case)
    more, piece = RIG_CASES[case]
    line = _assert_refused(capsys, _rig_args(rig, tmp_path / "out", *more), piece)
    assert "check=False" not in line and "center_from=" not in line  # the library's hints, said as options
    assert not (tmp_path / "out").exists()


def test_rig_inputs_must_match_the_cameras(rig, tmp_path, capsys):
    cams = ["--cameras", str(rig / "cameras.json"), "-o", str(tmp_path / "out"), "--default"]
    five = [str(rig / f"cam_{c:02d}") for c in range(5)]
    _assert_refused(capsys, ["sequence", *five, *cams], "6 cameras in")
    _assert_refused(capsys, ["sequence", *five, str(rig / "cam_09"), *cams], "no video or folder of frames")
    for p in (rig / "cam_00").glob("*.png"):  # RGB frames: no alpha for the subject's centre
        Image.open(p).convert("RGB").save(p)
    _assert_refused(capsys, ["sequence", *cams, "--front-camera", "1"], "pass --center-from axes")
    assert not (tmp_path / "out").exists()


def test_rig_output_of_other_settings_is_refused(rig, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_rig_args(rig, out, "--no-videos")) == 0
    capsys.readouterr()
    before = _files(out)
    _assert_refused(capsys, _rig_args(rig, out, "--no-videos", "--every", "2"), "holds a run with other settings")
    assert _files(out) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _assert_refused(capsys, _rig_args(rig, tmp_path / "mine"), "not a sequence folder")
    assert _files(tmp_path / "mine") == {"notes.txt": b"keep"}
    assert main(_rig_args(rig, out, "--no-videos", "--every", "2", "--overwrite")) == 0  # the old run is kept aside
    assert _one_line(capsys).startswith("2 frames (2 computed, 0 kept")
    (bak,) = tmp_path.glob("out.bak-*")
    assert _files(bak) == before


def test_video_bad_input(video, rig, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["-o", str(out), "--default", "--steps", "2"]
    cases = [
        (["sequence", str(video), str(video), *base], "got 2 INPUTs (a rig needs --cameras FILE)"),
        (["sequence", *base], "got 0 INPUTs"),
        (["sequence", str(tmp_path / "none.mp4"), *base], "no video or folder of frames"),
        (["sequence", str(video), *base, "--fps", "10"], "drop --fps"),
        (["sequence", str(video), *base, "--start", "5"], "need 0 <= start < end <= 4"),
        (["sequence", str(video), *base, "--batch", "2"], "--batch is an option of a rig"),
        (["sequence", str(video), *base, "--layout", "none"], "--layout none (every camera) is for a rig"),
        (["sequence", str(video), *base, "--weights", "mv", "gs.pt"], "either --default or --weights"),
    ]
    (rig / "cam_00" / "frames.json").unlink()
    cases.append((["sequence", str(rig / "cam_00"), *base], "has no frame rate; pass fps= (CLI: --fps)"))
    png = (rig / "cam_01" / "frame_00000.png").read_bytes()
    (rig / "cam_01" / "frame_00000.png").write_bytes(png[:len(png) // 2])  # the header reads, the pixels do not
    cases.append((["sequence", str(rig / "cam_01"), *base], "frame_00000.png"))  # before the weights load
    for argv, piece in cases: _assert_refused(capsys, argv, piece)
    assert not out.exists()


def test_subprocess_has_no_traceback(rig, tmp_path):
    _break(rig, "dropped")  # found by the library, after the model loaded
    r = subprocess.run([sys.executable, "-m", "facelift_nb", *_rig_args(rig, tmp_path / "out")], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("facelift-nb: error: ") and "dropped frames" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
