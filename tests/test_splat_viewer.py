"""The splat viewer: its frames are `render`'s images at its camera, its camera follows the browser, large scenes
are subsampled with the count shown, the overlays land where the camera projects them, and its front end ships."""
import io
from importlib.resources import files

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.cameras import orbit
from facelift_nb.layouts import get_layout
from facelift_nb.metrics import psnr
from facelift_nb.render import render
from facelift_nb.splats import Gaussians
from facelift_nb.testing import head_scene
from facelift_nb.widgets import (
    DEFAULT_VIEW,
    SplatViewer,
    encode_frame,
    overlay_segments,
    project_segments,
    splat_subset,
    view_camera,
    viewer_frame,
)


@pytest.fixture(scope="module")
def head():
    return head_scene(6000)


def _decoded(viewer) -> torch.Tensor:  # [H, W, 3] in [0, 1]
    "The frame the widget sends to the browser, decoded as the browser does."
    return torch.as_tensor(np.array(Image.open(io.BytesIO(viewer.canvas.frame)).convert("RGB"))) / 255.


@pytest.mark.parametrize("fmt,min_db", [("png", 40.), ("jpeg", 30.)])
def test_sent_frame_matches_render(head, fmt, min_db):
    v = SplatViewer(head, hw=(160, 192), volume=False, fmt=fmt, mode="frames")
    for view in (dict(DEFAULT_VIEW), dict(DEFAULT_VIEW, azimuth_deg=-70., elevation_deg=35., radius=2.2,
                                          target=[0.1, 0.0, 0.05])):
        v.canvas.camera = view  # what the browser writes after a drag
        ref = render(head, view_camera(view, (160, 192)), backend="cpu").rgb[0]
        got = _decoded(v)
        assert got.shape == (160, 192, 3)
        assert float(psnr(got, ref)) >= min_db, (fmt, view)
    assert v.errors == []


def test_view_camera_is_the_orbit_camera():
    view = dict(DEFAULT_VIEW, azimuth_deg=135., elevation_deg=-20., radius=3.1, fov_deg=40., target=[0., 0.2, 0.])
    cam = view_camera(view, (64, 80))
    ref = orbit([135.], -20., radius=3.1, fov_deg=40., hw=(64, 80), target=(0., 0.2, 0.))
    assert torch.allclose(cam.w2c, ref.w2c) and torch.allclose(cam.K, ref.K)


def test_threshold_and_subsample_counts(head):
    v = SplatViewer(head, hw=(48, 48), max_splats=700)
    assert v.shown["shown"] == 700 and f"showing 700 of {len(head):,}" in v.info.value
    v.threshold.value = 0.9
    eligible = int((head.opacities >= 0.9).sum())
    assert v.shown["eligible"] == eligible and v.shown["shown"] == min(700, eligible)
    sub, n = splat_subset(head, 0.9, 700)
    assert (len(sub), n) == (v.shown["shown"], eligible)
    assert torch.equal(splat_subset(head, 0., 500)[0].means, splat_subset(head, 0., 500)[0].means)  # seeded


def test_overlays_project_with_the_pinhole():
    cam = view_camera(dict(DEFAULT_VIEW, azimuth_deg=10.), (96, 128))
    seg = np.array([[[0.3, -0.2, 0.1], [-0.4, 0.3, -0.2]]])
    uv = project_segments(seg, cam)
    pc = seg[0] @ cam.w2c[0, :3, :3].double().numpy().T + cam.w2c[0, :3, 3].double().numpy()  # OpenCV pinhole
    pix = pc @ cam.K[0].double().numpy().T
    np.testing.assert_allclose(uv[0], pix[:, :2] / pix[:, 2:], atol=1e-6)
    assert project_segments(seg, cam.transform(torch.eye(4))).shape == (1, 2, 2)


def test_overlays_are_drawn_and_toggle(head):
    cams = get_layout("facelift6").cameras()
    v = SplatViewer(head, cams, hw=(96, 96), volume=True, mode="frames")
    with_lines = v.frame.copy()
    v.frusta.value = v.volume.value = False
    assert (with_lines != v.frame).any(axis=-1).sum() > 50
    assert len(overlay_segments(cams)) == len(cams) + 1


def test_bad_views_and_formats(head):
    with pytest.raises(ValueError, match="Start from DEFAULT_VIEW"):
        view_camera({"radius": 2.})
    with pytest.raises(ValueError, match="radius"):
        SplatViewer(head, view=dict(DEFAULT_VIEW, radius=0.))
    with pytest.raises(ValueError, match='`fmt` must be "png" or "jpeg"'):
        encode_frame(np.zeros((2, 2, 3), np.uint8), "webp")
    with pytest.raises(TypeError, match="one Gaussians set"):
        viewer_frame(torch.zeros(3, 3))


def test_results_display_as_the_viewer_with_their_text(head):
    from types import SimpleNamespace

    from facelift_nb.widgets import viewer_bundle
    out = SimpleNamespace(gaussians=head, cameras=get_layout("facelift6").cameras())  # as a FaceLiftOutput
    bundle = viewer_bundle(out, hw=(32, 32))
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["text/plain"] == repr(out)
    assert viewer_bundle(head_scene(200).to(dtype=torch.float32), hw=(16, 16))["text/plain"].startswith("Gaussians")
    assert viewer_bundle("not splats") is None


def test_splat_sets_display_as_the_viewer_in_jupyter_only(head, monkeypatch):
    "By typing its name: a Gaussians set or a FaceLiftOutput is the viewer in a Jupyter kernel, its text elsewhere."
    from IPython.core.interactiveshell import InteractiveShell

    from facelift_nb.pipeline import FaceLiftOutput
    shell, widget = InteractiveShell.instance(), "application/vnd.jupyter.widget-view+json"
    cams = get_layout("facelift6").cameras(hw=(32, 32))
    out = FaceLiftOutput(None, None, cams, head, render(head, cams), None)
    for obj in (head, out):
        assert shell.display_formatter.format(obj)[0] == {"text/plain": repr(obj)}  # a terminal: text only
    monkeypatch.setattr(shell, "kernel", object(), raising=False)  # as ipykernel's shell
    for obj in (head, out):
        data = shell.display_formatter.format(obj)[0]
        assert widget in data and data["text/plain"] == repr(obj), data.keys()
    batch = Gaussians(*(t[None] for t in (head.means, head.quats, head.scales, head.opacities, head.sh)))
    assert shell.display_formatter.format(batch)[0] == {"text/plain": repr(batch)}  # a batch is no one viewer: text


def test_front_end_ships_with_the_package():
    js = files("facelift_nb").joinpath("static", "splat_viewer.js").read_text()
    gl = files("facelift_nb").joinpath("static", "splat_webgl.js").read_text()
    assert "export default" in js and "class SplatGL" in gl  # the WebGL renderer ships beside the viewer
    assert "http" not in js + gl and "import " not in js + gl  # loaded from the package: no CDN, no imports
    import tomllib
    from pathlib import Path
    cfg = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "static/*" in cfg["tool"]["setuptools"]["package-data"]["facelift_nb"]
