"""Frame sources, checks, the resumable store and the frame loop (facelift_nb.frames), on files written here:
videos with a constant rate, dropped frames and a variable rate (made with the ffmpeg that imageio-ffmpeg ships),
image folders with gaps, odd sizes and bad clocks, and a run interrupted half-way."""
import gc
import json
import subprocess
import weakref
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.cameras import orbit
from facelift_nb.frames import (
    check_rig_sources,
    frame_changes,
    merge_index,
    open_frames,
    open_store,
    read_frames,
    run_frames,
    select_frames,
    timing_problems,
)
from facelift_nb.splats import Gaussians


def _ramp(k: int, hw=(16, 16)) -> np.ndarray:
    return np.full((*hw, 3), (15 * k) % 256, np.uint8)


def _folder(d: Path, numbers, hw=(16, 16), fps=None) -> Path:
    d.mkdir(parents=True)
    for n in numbers: Image.fromarray(_ramp(n, hw)).save(d / f"frame_{n:05d}.png")
    if fps is not None: (d / "frames.json").write_text(json.dumps({"fps": fps}))
    return d


def _filtered_video(path: Path, n: int, vf: str, hw=(16, 16)) -> Path:
    "An H.264 video of `n` frames at 10 fps passed through the ffmpeg filter `vf`, its timestamps kept as they come."
    d = path.parent / (path.stem + "_src")
    d.mkdir()
    for k in range(n): Image.fromarray(_ramp(k, hw)).save(d / f"{k}.png")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", "10", "-i",
                    str(d / "%d.png"), "-vf", vf, "-fps_mode", "passthrough", "-enc_time_base", "1:1000",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    str(path)], check=True)
    return path


def test_constant_rate_video_reads_every_frame_in_order(tmp_path):
    v = tmp_path / "v.mp4"
    imageio.mimwrite(v, [_ramp(k) for k in range(12)], fps=12, macro_block_size=1)
    src = open_frames(v)
    assert (len(src), src.hw, src.fps) == (12, (16, 16), 12.)
    np.testing.assert_allclose(np.diff(src.times_s), 1 / 12, atol=2e-3)
    got = [(i, round(x.mean().item() * 255 / 15)) for i, x in read_frames(src, [0, 3, 11])]
    assert got == [(0, 0), (3, 3), (11, 11)]


def test_video_with_a_variable_frame_rate_is_refused(tmp_path):
    v = _filtered_video(tmp_path / "vfr.mp4", 12, r"settb=1/1000,setpts=N*100+mod(N\,2)*30")  # 130, 70 ms apart
    with pytest.raises(ValueError, match="variable frame rate"): open_frames(v)
    assert len(open_frames(v, check=False)) >= 12  # readable on request


def test_video_that_dropped_frames_is_refused(tmp_path):
    v = _filtered_video(tmp_path / "drop.mp4", 12, r"select=not(eq(n\,5))")  # frame 5 lost, the clock kept
    with pytest.raises(ValueError, match="dropped frames"): open_frames(v)


def test_folder_checks(tmp_path):
    src = open_frames(_folder(tmp_path / "ok", range(5), fps=10))
    assert src.times_s == (0., .1, .2, .3, .4) and src.numbers == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"the numbers jump 1 -> 3 \(1 missing\)"):
        open_frames(_folder(tmp_path / "gap", [0, 1, 3, 4], fps=10))
    with pytest.raises(ValueError, match="no frame rate"): open_frames(_folder(tmp_path / "noclock", range(3)))
    d = _folder(tmp_path / "odd", range(3), fps=10)
    Image.fromarray(_ramp(0, (16, 18))).save(d / "frame_00001.png")
    with pytest.raises(ValueError, match="mismatched sizes: frame_00001.png is 18x16"): open_frames(d)
    d = _folder(tmp_path / "times", range(4))
    (d / "frames.json").write_text(json.dumps({"times_s": [0, .1, .25, .3]}))
    with pytest.raises(ValueError, match="variable frame rate"): open_frames(d)
    two = _folder(tmp_path / "two", range(3), fps=10)
    with pytest.raises(ValueError, match="`fps` is 12 but"): open_frames(two, 12)
    (tmp_path / "unnumbered").mkdir()
    Image.fromarray(_ramp(0)).save(tmp_path / "unnumbered" / "front.png")
    with pytest.raises(ValueError, match="must be numbered"): open_frames(tmp_path / "unnumbered", fps=10)
    with pytest.raises(FileNotFoundError): open_frames(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="must be a video"): open_frames(tmp_path / "notes.txt")


def test_timing_problems_of_clean_clocks_are_empty():
    for fps in (12, 24, 29.97, 30, 60):
        assert timing_problems([k / fps for k in range(300)]) == []
    jitter = np.arange(100) / 30 + np.random.default_rng(0).uniform(-1e-3, 1e-3, 100)  # ms rounding of containers
    assert timing_problems(jitter) == []


def test_rig_sources_must_agree(tmp_path):
    a = open_frames(_folder(tmp_path / "a", range(6), fps=10))
    b = open_frames(_folder(tmp_path / "b", range(5), fps=10))
    with pytest.raises(ValueError, match="different frame counts: b 5, a 6"): check_rig_sources([a, b])
    slow = open_frames(_folder(tmp_path / "slow", range(6), fps=8))
    with pytest.raises(ValueError, match="not in step"): check_rig_sources([a, slow])
    cams = orbit([0., 90.], 0., 2.7, 50., (32, 32))
    with pytest.raises(ValueError, match="a's frames are 16x16 but the cameras are calibrated for 32x32"):
        check_rig_sources([a, a], cams)
    with pytest.raises(ValueError, match="2 cameras in the camera file but 3"): check_rig_sources([a, a, a], cams)
    check_rig_sources([a, a], cams.resize((16, 16)))


def test_reading_streams_one_frame_at_a_time(tmp_path):
    "A long video is read with at most a couple of decoded frames alive at any moment."
    v = tmp_path / "long.mp4"
    imageio.mimwrite(v, [_ramp(k, (64, 64)) for k in range(120)], fps=30, macro_block_size=1)
    alive, n = [], 0
    for _, x in read_frames(open_frames(v)):
        alive.append(weakref.ref(x))
        del x
        gc.collect()
        n += 1
        assert sum(r() is not None for r in alive) <= 2
    assert n == 120


def test_select_frames_errors():
    assert select_frames(5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="`every` must be at least 1"): select_frames(5, every=0)
    with pytest.raises(TypeError, match="`start` must be an integer"): select_frames(5, start=1.5)
    with pytest.raises(ValueError, match="start < end"): select_frames(5, 5)


def _blob(x: float) -> Gaussians:
    return Gaussians(torch.tensor([[x, 0., 0.]]), torch.tensor([[1., 0, 0, 0]]), torch.full((1, 3), .2),
                     torch.full((1,), .9), torch.zeros(1, 1, 3))


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_run_resumes_to_identical_files(tmp_path):
    read = lambda ids: ((i, i) for i in ids)
    work = lambda chunk, xs: [(_blob(0.1 * x), {"time_s": x / 10}) for x in xs]
    clean = open_store(tmp_path / "clean", {"run": 1})
    merge_index(run_frames(clean, range(7), read, work, batch=2, progress=False))

    def crashing(chunk, xs):
        if 4 in chunk: raise KeyboardInterrupt  # killed half-way
        return work(chunk, xs)
    store = open_store(tmp_path / "resumed", {"run": 1})
    with pytest.raises(KeyboardInterrupt): run_frames(store, range(7), read, crashing, batch=2, progress=False)
    assert store.done_frames() == [0, 1, 2, 3]
    store = open_store(tmp_path / "resumed", {"run": 1})
    run = run_frames(store, range(7), read, work, batch=2, progress=False)
    assert run.computed == (4, 5, 6)
    merge_index(run)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean")


def test_other_settings_are_refused_or_moved_aside(tmp_path):
    open_store(tmp_path / "run", {"seed": 0}).write_frame(0, _blob(0.), {})
    with pytest.raises(ValueError, match="seed differ"): open_store(tmp_path / "run", {"seed": 1})
    fresh = open_store(tmp_path / "run", {"seed": 1}, overwrite=True)
    assert fresh.done_frames() == []
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.bak-")]
    assert len(kept) == 1 and (kept[0] / "frames" / "frame_00000.ply").is_file()  # nothing deleted
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a sequence output"): open_store(tmp_path / "other", {})


def test_frame_changes():
    assert frame_changes([]).tolist() == []
    np.testing.assert_allclose(frame_changes([torch.zeros(2, 2, 3), torch.full((2, 2, 3), .5)]), [.5])
    with pytest.raises(ValueError, match="different shapes"):
        frame_changes([torch.zeros(2, 2, 3), torch.zeros(3, 2, 3)])
