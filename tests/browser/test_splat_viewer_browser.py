"""The splat viewer in a real browser: JupyterLab (headless, 127.0.0.1) driven by Debian's chromium through playwright.

Its frame, screenshotted in the page, must match `render` at the camera the page reports (PSNR >= 30 dB on the
synthetic head), before and after a drag; a drag orbits, a shift-drag pans and the wheel zooms; a Gaussians set
displays as the viewer when a cell ends with it, with nothing to set up; 50k and ~1.57M
splat scenes keep answering while dragged (their frame rates, a lower bound in headless chromium, are written to
`splat_viewer_fps.json`); screenshots are saved in `test-artifacts/browser/` (or `$FACELIFT_NB_ARTIFACTS`)."""
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.metrics import psnr
from facelift_nb.render import render
from facelift_nb.testing import head_scene
from facelift_nb.widgets import view_camera

from .lab import artifacts_dir, run_notebook, start_lab
from .test_widgets_browser import CHROMIUM, ERRORS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(.ci/run installs it with apt: apt-get install chromium)")

CELLS = [
    "import warnings; warnings.simplefilter('ignore')\nfrom facelift_nb.widgets import SplatViewer\n"
    "from facelift_nb.layouts import get_layout\nfrom facelift_nb.testing import head_scene\nhead = head_scene(6000)",
    "SplatViewer(head, hw=(256, 256), volume=False, mode='frames')",
    "SplatViewer(head_scene(50_000), get_layout('facelift6').cameras(), hw=(512, 512), mode='frames')",
    "SplatViewer(head_scene(1_570_000), get_layout('facelift6').cameras(), hw=(512, 512), mode='frames')",
    "head  # a Gaussians set: shown as the viewer (mode 'auto'), with nothing to set up",
]
HW = (256, 256)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from start_lab(tmp_path_factory.mktemp("lab"), CELLS, "splats.ipynb")


def _settled(viewer, quiet_s: float = 1.5, timeout_s: float = 60) -> int:
    "Wait until no frame has arrived for `quiet_s`; the number of frames rendered."
    last, since, end = viewer.get_attribute("data-rendered"), time.time(), time.time() + timeout_s
    while time.time() < end:
        time.sleep(0.25)
        now = viewer.get_attribute("data-rendered")
        if now != last: last, since = now, time.time()
        elif time.time() - since > quiet_s: return int(now)
    raise AssertionError("the viewer kept rendering (or never answered)")


def _match_db(page, viewer, head, path: Path) -> float:
    "PSNR of the viewer's on-screen frame against `render` at the camera the page says it shows."
    time.sleep(0.5)
    b = viewer.locator("canvas, img").first.bounding_box()  # clipped to whole pixels: it may sit at a fractional offset
    shot = page.screenshot(path=str(path), clip=dict(x=round(b["x"]), y=round(b["y"]), width=HW[1], height=HW[0]))
    got = torch.as_tensor(np.array(Image.open(io.BytesIO(shot)).convert("RGB"))) / 255.
    ref = render(head, view_camera(json.loads(viewer.get_attribute("data-camera")), HW), backend="cpu").rgb[0]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(psnr(got, ref))


def _drag(page, viewer, dx: float, dy: float, steps: int = 10, shift: bool = False) -> None:
    b = viewer.bounding_box()
    x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
    page.mouse.move(x, y)
    if shift: page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=steps)
    page.mouse.up()
    if shift: page.keyboard.up("Shift")


def _fps(page, viewer, seconds: float = 4.0) -> float:
    "Frames that arrive per second while the viewer is dragged continuously for `seconds`."
    b = viewer.bounding_box()
    x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    n0, t0, k = int(viewer.get_attribute("data-rendered")), time.time(), 0
    while time.time() - t0 < seconds:
        k += 1
        page.mouse.move(x + 80 * np.sin(k / 10), y + 30 * np.cos(k / 10))
        time.sleep(0.01)
    frames, elapsed = int(viewer.get_attribute("data-rendered")) - n0, time.time() - t0
    page.mouse.up()
    return frames / elapsed


def orbit_pan_zoom(page, v0, head, art: Path, prefix: str) -> dict:
    "Orbit, pan and zoom viewer `v0` (showing `head`), checking the camera moves; PSNR against `render` at each step."
    v0.scroll_into_view_if_needed()
    _settled(v0)
    db = {"first view": _match_db(page, v0, head, art / f"{prefix}_first.png")}
    _drag(page, v0, 90, 40)  # orbit
    _settled(v0)
    cam = json.loads(v0.get_attribute("data-camera"))
    assert cam["azimuth_deg"] != 30. and cam["elevation_deg"] != 15., cam
    db["after a drag"] = _match_db(page, v0, head, art / f"{prefix}_dragged.png")
    _drag(page, v0, 40, 0, shift=True)  # pan
    _settled(v0)
    assert json.loads(v0.get_attribute("data-camera"))["target"] != cam["target"]
    page.mouse.wheel(0, 300)  # zoom out
    _settled(v0)
    cam2 = json.loads(v0.get_attribute("data-camera"))
    assert cam2["radius"] > cam["radius"], (cam, cam2)
    db["after pan and zoom"] = _match_db(page, v0, head, art / f"{prefix}_zoomed.png")
    return db


def test_splat_viewer_matches_render_and_responds(lab):
    from playwright.sync_api import sync_playwright
    url, token = lab
    art, head, errors = artifacts_dir(), head_scene(6000), []
    with sync_playwright() as p:
        browser, page = run_notebook(p, CHROMIUM, url, token, "splats.ipynb",
                                     "document.querySelectorAll('.facelift-splat-viewer img[src]').length == 4", errors)
        text = page.inner_text(".jp-Notebook")
        assert not [e for e in ERRORS if e in text], text[-2000:]
        assert "showing 200,000 of" in text  # the large scene is subsampled, and says so
        v0, v50k, vbig = (page.locator(".facelift-splat-viewer").nth(k) for k in range(3))
        db = orbit_pan_zoom(page, v0, head, art, "splat_viewer")
        assert page.locator(".facelift-splat-viewer").count() == 4  # typing a Gaussians' name shows the viewer
        auto = page.locator(".facelift-splat-viewer").nth(3)  # headless chromium draws WebGL in software: frames
        why = auto.get_attribute("data-gl-error") or ""
        assert auto.get_attribute("data-mode") == "frames" and "software WebGL" in why, why
        fps = {}
        for name, v in (("50k", v50k), ("1.57M (200k drawn)", vbig)):
            v.scroll_into_view_if_needed()
            _settled(v)
            fps[name] = round(_fps(page, v), 2)
            _settled(v)  # it never hangs: the frames stop when the drag does
            v.screenshot(path=str(art / f"splat_viewer_{name.split()[0]}.png"))
        (art / "splat_viewer_fps.json").write_text(json.dumps(dict(fps=fps, psnr_db=db), indent=1))
        browser.close()
    assert all(d >= 30 for d in db.values()), db
    assert all(f > 0 for f in fps.values()), fps
    assert not errors, errors[:5]
