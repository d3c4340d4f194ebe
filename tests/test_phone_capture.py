"""A synthetic phone capture (transforms.json in OpenGL axes, a Y-up metric world, the subject off the origin) through
check -> normalise -> match -> GS-LRM with the built-in model, from Python and from the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.builtin import WEIGHTS_DIR, default_weights_available
from facelift_nb.cameras import Cameras, check_cameras, read_cameras, write_cameras
from facelift_nb.cli import main
from facelift_nb.data import normalize_rig
from facelift_nb.layouts import get_layout, match_layout
from facelift_nb.metrics import psnr
from facelift_nb.pipeline import load_gslrm, reconstruct_views
from facelift_nb.render import render
from facelift_nb.splats import load_ply
from facelift_nb.synthetic import make_phone_capture, phone_orbit, render_views

pytestmark = pytest.mark.skipif(not default_weights_available(), reason="the built-in weights are not installed")
WHITE = (1., 1., 1.)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return make_phone_capture(tmp_path_factory.mktemp("phone") / "capture", n_frames=30, size=64)


@pytest.fixture(scope="module")
def gslrm():
    return load_gslrm(WEIGHTS_DIR / "gslrm")[0]


def _views(cap, cams: Cameras) -> torch.Tensor:  # [V, H, W, 3] over white, as the models see them
    rgba = torch.stack([torch.from_numpy(np.array(Image.open(cap.folder / m["file_path"]))) for m in cams.meta]) / 255
    return rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a > 0.5) & (b > 0.5)).sum().item() / ((a > 0.5) | (b > 0.5)).sum().item()


def test_capture_is_a_phone_world(capture):
    doc = json.loads((capture.folder / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(doc) and (doc["w"], doc["h"]) == (64, 64)
    assert [f["file_path"] for f in doc["frames"]][:2] == ["images/frame_00000.png", "images/frame_00001.png"]
    gl = torch.tensor([f["transform_matrix"] for f in doc["frames"]], dtype=torch.float64)
    centre = torch.tensor(capture.subject_center, dtype=torch.float64)
    to_head = torch.nn.functional.normalize(centre - gl[:, :3, 3], dim=-1)
    assert ((-gl[:, :3, 2] * to_head).sum(-1) > 0.99).all()  # OpenGL: the cameras look down their -z
    assert (gl[:, 1, 1] > 0.98).all()  # camera +y is world +Y: upright in a Y-up world
    dist = (gl[:, :3, 3] - centre).norm(dim=-1)
    assert 0.6 < dist.mean() < 0.75 and dist.max() - dist.min() > 0.03  # metres, the distance wobbles
    assert centre.norm() > 0.5  # the subject is not at the origin
    assert len({round(x, 1) for x in phone_orbit(30).centers.diff(dim=0).norm(dim=-1).tolist()}) > 3  # uneven steps


def test_python_end_to_end(capture, gslrm):
    cams = Cameras.from_transforms_json(capture.folder / "transforms.json")
    assert torch.equal(read_cameras(capture.folder / "transforms.json").w2c, cams.w2c)
    report = check_cameras(cams)
    assert report.ok, report
    truth = torch.tensor(capture.subject_center, dtype=torch.float64)
    assert (torch.tensor(report.subject_center, dtype=torch.float64) - truth).norm() < 0.01  # within 1 cm
    norm = normalize_rig(cams)
    assert (norm.center - truth).norm() < 0.01 and abs(norm.scale * capture.metres_per_unit - 1) < 0.02
    m = match_layout(norm.cameras, "facelift6")
    assert m.indices[0] == 0 and max(m.residuals_deg) < 8  # measured 4.9°; 10° is the limit
    idx = list(m.indices)
    views = _views(capture, cams)
    gauss = reconstruct_views(gslrm, views[idx], norm.cameras[idx])
    w = gauss.opacities[:, None]
    centroid = (gauss.means * w).sum(0) / w.sum()
    assert centroid.norm() < 0.5  # the head is reconstructed around the origin, not where the phone's world put it
    held = [i for i in range(len(cams)) if i not in idx]
    seen = render(gauss, norm.cameras[held], bg=WHITE)
    turned = render(gauss, norm.cameras[[(i + 15) % 30 for i in held]], bg=WHITE)
    p, p_turned = psnr(seen.rgb, views[held]).mean().item(), psnr(turned.rgb, views[held]).mean().item()
    assert p > 20 and p > p_turned + 1.5, (p, p_turned)  # measured 22.9 and 20.2 dB
    ideal = get_layout("facelift6").cameras(hw=cams.hw)  # the same head seen by the exact layout rig
    rgba = render_views(capture.subject, ideal)
    g_ideal = reconstruct_views(gslrm, rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:], ideal)
    p_ideal = psnr(render(g_ideal, phone_orbit(30, 64)[held], bg=WHITE).rgb, views[held]).mean().item()
    assert p > p_ideal - 1.0, (p, p_ideal)  # the phone's rig loses almost nothing: measured 22.9 vs 23.1 dB
    masks = torch.stack([torch.from_numpy(np.array(Image.open(capture.folder / cams.meta[i]["file_path"]))[..., 3])
                         for i in held]) / 255
    iou, iou_turned = _iou(seen.alpha, masks), _iou(turned.alpha, masks)
    assert iou > 0.75 and iou > iou_turned + 0.05, (iou, iou_turned)  # silhouettes: measured 0.83


def test_misread_axes_are_caught(capture, tmp_path):
    cams = Cameras.from_transforms_json(capture.folder / "transforms.json")
    misread = Cameras.from_c2w(cams.to_opengl(), cams.K, cams.hw, meta=cams.meta)  # OpenGL c2w taken for OpenCV
    report = check_cameras(misread)
    assert not report.ok and report.problems[0].startswith("camera axes look OpenGL")
    with pytest.raises(ValueError, match="do not face"): normalize_rig(misread)


def test_cli_end_to_end(capture, gslrm, tmp_path, capsys):
    tf = capture.folder / "transforms.json"
    assert main(["check-cameras", str(tf)]) == 0
    assert "OK" in capsys.readouterr().out
    out = tmp_path / "gs"
    assert main(["reconstruct", str(capture.folder), "--cameras", str(tf), "--normalize", "--layout", "facelift6",
                 "--default", "-o", str(out), "--turntable", "0"]) == 0
    assert {"gaussians.ply", "cameras.json", "renders.png", "manifest.json"} <= {p.name for p in out.iterdir()}
    g = load_ply(out / "gaussians.ply")
    assert len(g) > 300 and g.means.mean(0).norm() < 0.5  # around the origin of the normalised world
    cams = Cameras.from_transforms_json(tf)
    norm = normalize_rig(cams)
    idx = list(match_layout(norm.cameras, "facelift6").indices)
    py = reconstruct_views(gslrm, _views(capture, cams)[idx], norm.cameras[idx])
    assert len(g) == len(py) and (g.means - py.means).abs().max() < 1e-3  # the CLI runs the same chain
    used = Cameras.from_facelift_json(out / "cameras.json")
    assert len(used) == 6 and abs(used.centers.norm(dim=-1).mean().item() - 2.7) < 0.05


def test_cli_misread_axes_fail(capture, tmp_path, capsys):
    cams = Cameras.from_transforms_json(capture.folder / "transforms.json")
    misread = Cameras.from_c2w(cams.to_opengl(), cams.K, cams.hw, meta=cams.meta)  # copied into the OpenCV format
    path = write_cameras(misread, tmp_path / "opencv_cameras.json", "opencv_json")
    assert main(["check-cameras", str(path)]) == 1
    assert "camera axes look OpenGL" in capsys.readouterr().out
