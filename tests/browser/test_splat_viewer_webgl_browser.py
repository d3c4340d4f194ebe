"""The splat viewer's WebGL front end in a real browser: JupyterLab (headless, 127.0.0.1) and Debian's chromium.

Headless chromium has no GPU here, so WebGL is drawn by SwiftShader (software): the image must still match `render`
at the camera the page reports (PSNR >= 30 dB on the synthetic head) before and after a drag, a pan and a zoom; a drag
orbits, a shift-drag pans and the wheel zooms; frusta and the working volume are drawn (and depth-tested) by WebGL;
50k and ~1.57M splat scenes keep answering while dragged. Their frame rates (software WebGL, a lower bound for a
browser on a GPU) are written to `splat_viewer_webgl_fps.json`; screenshots to `test-artifacts/browser/`."""
import json

import numpy as np
import pytest

from facelift_nb.testing import head_scene

from .lab import artifacts_dir, run_notebook, start_lab
from .test_splat_viewer_browser import _fps, _settled, orbit_pan_zoom
from .test_widgets_browser import CHROMIUM, ERRORS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(.ci/run installs it with apt: apt-get install chromium)")

CELLS = [
    "import warnings; warnings.simplefilter('ignore')\nfrom facelift_nb.widgets import SplatViewer\n"
    "from facelift_nb.layouts import get_layout\nfrom facelift_nb.testing import head_scene\nhead = head_scene(6000)\n"
    "rig = get_layout('facelift6').cameras()",
    "SplatViewer(head, hw=(256, 256), volume=False, mode='webgl')",
    "SplatViewer(head_scene(50_000), rig, hw=(512, 512), mode='webgl')",
    "SplatViewer(head_scene(1_570_000), rig, hw=(512, 512), mode='webgl')",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from start_lab(tmp_path_factory.mktemp("lab"), CELLS, "webgl.ipynb")


def _colored(shot: np.ndarray) -> int:
    "Pixels of a strongly coloured line (not skin, hair or white): the frusta in the palette's blue, green, purple."
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    return int(((b - r > 60) | (g - r > 60)).sum())


def test_webgl_viewer_matches_render_and_responds(lab):
    from PIL import Image
    from playwright.sync_api import sync_playwright
    url, token = lab
    art, head, errors = artifacts_dir(), head_scene(6000), []
    ready = ("document.querySelectorAll('.facelift-splat-viewer[data-mode=webgl] canvas').length == 3 && "
             "[...document.querySelectorAll('.facelift-splat-viewer')].every((e) => Number(e.dataset.rendered) >= 1)")
    with sync_playwright() as p:
        browser, page = run_notebook(p, CHROMIUM, url, token, "webgl.ipynb", ready, errors)
        text = page.inner_text(".jp-Notebook")
        assert not [e for e in ERRORS if e in text], text[-2000:]
        assert "showing 200,000 of" in text  # the large scene is subsampled, and says so
        v0, v50k, vbig = (page.locator(".facelift-splat-viewer").nth(k) for k in range(3))
        db = orbit_pan_zoom(page, v0, head, art, "splat_viewer_webgl")
        fps, lines = {}, {}
        for name, v in (("50k", v50k), ("1.57M (200k drawn)", vbig)):
            v.scroll_into_view_if_needed()
            _settled(v, timeout_s=120)
            fps[name] = round(_fps(page, v), 2)
            _settled(v, timeout_s=120)  # it never hangs: the frames stop when the drag does
            path = art / f"splat_viewer_webgl_{name.split()[0]}.png"
            v.locator("canvas").screenshot(path=str(path))
            lines[name] = _colored(np.array(Image.open(path).convert("RGB")))
        (art / "splat_viewer_webgl_fps.json").write_text(json.dumps(dict(fps=fps, psnr_db=db), indent=1))
        browser.close()
    assert all(d >= 30 for d in db.values()), db
    assert all(f > 0 for f in fps.values()), fps
    assert all(n > 200 for n in lines.values()), lines  # the frusta are drawn, in their colours, after every redraw
    assert not errors, errors[:5]
