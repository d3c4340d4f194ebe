"""Camera-axis convention detection, read_cameras/write_cameras dispatch, and the check-cameras / convert-cameras /
reconstruct command lines on every pose source (opencv_cameras.json, transforms.json, COLMAP text and binary)."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import (
    AXIS_CONVENTIONS,
    Cameras,
    axis_convention,
    camera_file_format,
    check_cameras,
    orbit,
    published_cameras_path,
    read_cameras,
    reinterpret_axes,
    write_cameras,
)
from facelift_nb.cli import main

WRONG = ("opengl", "mirror-x", "mirror-y", "mirror-z", "c2w")  # readings that are their own inverse
OPENGL_LINE = ("camera axes look OpenGL: convert with Cameras.from_opengl(...) or "
               "`facelift-nb convert-cameras IN -o OUT --from-convention opengl`")


def _ring(seed: int = 0, V: int = 6) -> Cameras:
    "A ring of cameras around an off-centre subject, at varied elevations: every diagnosis is unambiguous on it."
    rng = np.random.default_rng(seed)
    az = np.sort(rng.uniform(0, 360, V))
    return orbit(az.tolist(), elevation_deg=rng.uniform(-30, 30, V).tolist(), radius=float(rng.uniform(1.5, 4)),
                 target=tuple(rng.uniform(-0.3, 0.3, 3).tolist()))


def _gl_c2w_as_w2c(rig: Cameras) -> Cameras:
    "What a reader that takes a transforms.json's OpenGL c2w for an OpenCV w2c produces."
    return Cameras(rig.K, rig.to_opengl(), rig.hw)


# ---------------------------------------------------------------- the diagnosis

@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), V=st.integers(4, 10))
def test_every_wrong_reading_of_a_ring_is_named_and_undone(seed, V):
    rig = _ring(seed, V)
    rep = check_cameras(rig)
    assert rep.ok and rep.convention == "opencv" and rep.subject_estimated
    for wrong in WRONG:
        stored = reinterpret_axes(rig, wrong)  # the poses as a wrong conversion left them
        got = check_cameras(stored)
        assert got.convention == wrong and not got.ok
        torch.testing.assert_close(reinterpret_axes(stored, got.convention).w2c, rig.w2c, atol=1e-4, rtol=0)
    stored = _gl_c2w_as_w2c(rig)
    assert check_cameras(stored).convention == "opengl-c2w"
    torch.testing.assert_close(reinterpret_axes(stored, "opengl-c2w").w2c, rig.w2c, atol=1e-4, rtol=0)


def test_opengl_rig_says_exactly_how_to_convert():
    rig = _ring(1)
    rep = check_cameras(reinterpret_axes(rig, "opengl"))
    assert rep.problems[0].startswith(OPENGL_LINE)
    assert sum("faces away" in p for p in rep.problems) == len(rig)  # the per-camera lines stay
    # the subject is estimated from the optical-axis lines: the same for the OpenCV and the OpenGL reading
    np.testing.assert_allclose(rep.subject_center, check_cameras(rig).subject_center, atol=1e-4)
    text = str(rep)
    assert "estimated as the point nearest to all optical axes" in text and "read as 'opengl'" in text


def test_mirrored_and_swapped_rigs_get_their_own_advice():
    rig = _ring(2)
    mirrored = check_cameras(reinterpret_axes(rig, "mirror-y"))
    assert mirrored.problems[0].startswith("camera axes look mirrored (det -1 for every camera")
    assert "--from-convention mirror-y" in mirrored.problems[0]
    assert sum("improper rotation" in p for p in mirrored.problems) == len(rig)
    swapped = check_cameras(reinterpret_axes(rig, "c2w"))
    assert "camera-to-world matrices stored as w2c" in swapped.problems[0]
    assert "--from-convention c2w" in swapped.problems[0]
    gl = check_cameras(_gl_c2w_as_w2c(rig))
    assert "OpenGL camera-to-world" in gl.problems[0] and "--from-convention opengl-c2w" in gl.problems[0]


def test_given_subject_centre_and_mixed_rigs():
    rig = orbit([0., 90., 180., 270.])  # around the origin, no elevation
    rep = check_cameras(reinterpret_axes(rig, "opengl"), subject_center=(0, 0, 0))
    assert rep.convention == "opengl" and not rep.subject_estimated and "): given" in str(rep)
    w2c = rig.w2c.clone()
    w2c[0] = torch.diag(torch.tensor([1., -1, -1, 1])) @ w2c[0]  # only one camera turned around: no rig-wide reading
    mixed = check_cameras(Cameras(rig.K, w2c, rig.hw), subject_center=(0, 0, 0))
    assert mixed.convention is None and [p.split(":")[0] for p in mixed.problems] == ["camera 0"]
    assert check_cameras(rig[0]).convention is None  # one optical axis: no subject, nothing to decide
    assert axis_convention(rig.w2c, subject_center=(0., 0., 0.)) == "opencv"


def test_reinterpret_axes_errors_and_inverses():
    rig = _ring(3)
    for c in AXIS_CONVENTIONS:
        assert reinterpret_axes(rig, c).w2c.shape == rig.w2c.shape
    torch.testing.assert_close(reinterpret_axes(reinterpret_axes(rig, "c2w"), "c2w").w2c, rig.w2c, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="`convention` must be one of"):
        reinterpret_axes(rig, "OpenGL ")
    with pytest.raises(TypeError, match="must be Cameras"):
        reinterpret_axes(rig.w2c, "opengl")


# ---------------------------------------------------------------- read_cameras / write_cameras

@pytest.mark.parametrize("fmt,detected", [("opencv_json", "opencv_json"), ("transforms", "transforms"),
                                          ("colmap", "colmap"), ("colmap-bin", "colmap")])
def test_write_then_read_every_format(tmp_path, fmt, detected):
    rig = Cameras.from_facelift_json(published_cameras_path())
    out = write_cameras(rig, tmp_path / ("cams.json" if "json" in fmt or fmt == "transforms" else "sparse"), fmt)
    assert camera_file_format(out) == detected
    back = read_cameras(out)
    assert read_cameras(out, format=detected).num_views == 6
    torch.testing.assert_close(back.w2c, rig.w2c, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.K, rig.K, atol=1e-4, rtol=0)
    assert back.hw == rig.hw and check_cameras(back).ok
    if fmt == "colmap-bin": assert sorted(p.suffix for p in out.iterdir()) == [".bin"] * 3


def _file(name: str, data):
    "A maker of a file `name` holding `data` (bytes or text) in the test's folder."
    def make(d):
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return d / name
    return make


def _sparse_workspace(d):
    (d / "sparse").mkdir()
    return d


@pytest.mark.parametrize("make,exc,match", [
    (lambda d: d / "missing.json", FileNotFoundError, "no camera file or folder"),
    (lambda d: d, ValueError, "folder without a COLMAP model"),
    (_sparse_workspace, ValueError, "Pass its model folder"),
    (_file("cameras.txt", ""), ValueError, "pass its folder"),
    (_file("c.json", b"\x89PNG\x00"), ValueError, "not a JSON camera file"),
    (_file("c.json", "[1, 2]"), ValueError, "found a JSON list"),
    (_file("c.json", '{"cams": []}'), ValueError, "no non-empty `frames`"),
    (_file("c.json", '{"frames": [{"pose": 1}]}'), ValueError, "neither `w2c` nor `transform_matrix`"),
])
def test_unknown_inputs_say_what_was_found_and_what_is_accepted(tmp_path, make, exc, match):
    path = make(tmp_path)
    with pytest.raises(exc, match=match) as e:
        read_cameras(path)
    if exc is ValueError and "pass its folder" not in match: assert "transforms.json" in str(e.value)


def test_format_arguments_are_checked(tmp_path):
    rig = orbit([0., 90.])
    with pytest.raises(ValueError, match="must be one of"):
        write_cameras(rig, tmp_path / "x", "colmap_bin")
    with pytest.raises(ValueError, match="'auto' or one of"):
        read_cameras(published_cameras_path(), format="colmap-bin")
    with pytest.raises(TypeError, match="must be Cameras"):
        write_cameras(rig.w2c, tmp_path / "x.json", "opencv_json")


# ---------------------------------------------------------------- the command line

def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facelift-nb: error: "), err
    return lines[0]


def test_check_cameras_reads_every_format(tmp_path, capsys):
    rig = Cameras.from_facelift_json(published_cameras_path())
    for fmt in ("transforms", "colmap-bin"):
        path = write_cameras(rig, tmp_path / fmt, fmt)
        assert main(["check-cameras", str(path), "--radius", "2.7"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"read 6 cameras from {path} (") and out.rstrip().endswith("OK")
    bad = write_cameras(reinterpret_axes(rig, "opengl"), tmp_path / "gl.json", "opencv_json")
    assert main(["check-cameras", str(bad)]) == 1
    assert OPENGL_LINE in capsys.readouterr().out
    assert main(["check-cameras", str(bad), "--from-convention", "opengl"]) == 0
    assert "poses re-read as 'opengl'" in capsys.readouterr().out


def test_check_cameras_wrong_inputs_are_one_line(tmp_path, capsys):
    assert main(["check-cameras", str(tmp_path / "nope.json")]) == 2
    assert "no camera file or folder" in _one_line(capsys.readouterr().err)
    (tmp_path / "poses.json").write_text(json.dumps({"poses": []}))
    assert main(["check-cameras", str(tmp_path / "poses.json")]) == 2
    assert "found the keys ['poses']" in _one_line(capsys.readouterr().err)


def test_convert_cameras_round_trip_and_refusals(tmp_path, capsys):
    rig = _ring(4)
    src = write_cameras(rig, tmp_path / "rig.json", "opencv_json")
    a, b, c = tmp_path / "sparse", tmp_path / "transforms.json", tmp_path / "back.json"
    assert main(["convert-cameras", str(src), "-o", str(a), "--to", "colmap-bin"]) == 0
    assert main(["convert-cameras", str(a), "-o", str(b), "--to", "transforms"]) == 0
    assert main(["convert-cameras", str(b), "-o", str(c), "--to", "opencv_json"]) == 0
    assert "(COLMAP model); wrote transforms" in capsys.readouterr().out
    torch.testing.assert_close(read_cameras(c).w2c, rig.w2c, atol=1e-5, rtol=0)
    # an existing output is never replaced without --overwrite
    before = c.read_bytes()
    assert main(["convert-cameras", str(src), "-o", str(c), "--to", "colmap"]) == 2
    assert "output exists" in _one_line(capsys.readouterr().err) and c.read_bytes() == before
    # a rig that fails the checks: refused (exit 1, one line), written with --from-convention or --force
    gl = write_cameras(reinterpret_axes(rig, "opengl"), tmp_path / "gl.json", "opencv_json")
    fixed, forced = tmp_path / "fixed.json", tmp_path / "forced.json"
    assert main(["convert-cameras", str(gl), "-o", str(fixed), "--to", "opencv_json"]) == 1
    assert "camera axes look OpenGL" in _one_line(capsys.readouterr().err) and not fixed.exists()
    assert main(["convert-cameras", str(gl), "-o", str(fixed), "--to", "opencv_json",
                 "--from-convention", "opengl"]) == 0
    torch.testing.assert_close(read_cameras(fixed).w2c, rig.w2c, atol=1e-5, rtol=0)
    assert main(["convert-cameras", str(gl), "-o", str(forced), "--to", "transforms", "--force"]) == 0
    assert "--force" in capsys.readouterr().out and forced.is_file()
    assert main(["convert-cameras", str(tmp_path / "none.json"), "-o", str(tmp_path / "o.json"), "--to",
                 "transforms"]) == 2
    assert "no camera file" in _one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        main(["convert-cameras", str(src), "-o", str(tmp_path / "o"), "--to", "ply"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--to: invalid choice: 'ply'" in err


def test_reconstruct_normalizes_a_y_up_metric_transforms_json(tmp_path, capsys):
    from facelift_nb.builtin import default_weights_available
    from facelift_nb.layouts import get_layout
    from facelift_nb.render import save_image
    if not default_weights_available(): pytest.skip("the built-in weights are not installed")
    canon = get_layout("facelift6").cameras(hw=(64, 64))
    perm = [3, 0, 5, 1, 4, 2]  # capture order, not slot order; view 1 shows the face
    yup = torch.tensor([[1., 0, 0, 0.4], [0, 0, 1, 1.2], [0, -1, 0, -0.3], [0, 0, 0, 1]])  # Z up -> Y up, moved
    world = torch.diag(torch.tensor([0.2, 0.2, 0.2, 1.])) @ yup  # in metres: the cameras 0.54 m from the subject
    capture = tmp_path / "capture"
    (capture / "images").mkdir(parents=True)
    names = tuple(f"images/frame_{i:05d}.png" for i in range(6))
    rig = Cameras(canon.K[perm], canon[perm].transform(world).w2c, canon.hw, names=names,
                  meta=tuple({"file_path": n} for n in names))
    for i, n in enumerate(names): save_image(torch.full((64, 64, 3), 0.2 + 0.1 * i), capture / n)
    tf = write_cameras(rig, capture / "transforms.json", "transforms")
    out = tmp_path / "out"
    args = ["reconstruct", str(capture), "--cameras", str(tf), "--default", "-o", str(out), "--turntable", "0"]
    assert main(args + ["--layout", "facelift6"]) == 2  # a Y-up metric rig fits no slot of the FaceLift world
    assert "add --normalize" in _one_line(capsys.readouterr().err)
    assert main(args + ["--normalize", "--front-camera", "1", "--layout", "facelift6"]) == 0
    assert "from 6 views (transforms.json" in capsys.readouterr().out
    cams = read_cameras(out / "cameras.json")
    torch.testing.assert_close(cams.w2c, get_layout("facelift6").cameras().w2c, atol=1e-4, rtol=0)  # slot order
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["normalize"] is True and settings["layout"] == "facelift6"
