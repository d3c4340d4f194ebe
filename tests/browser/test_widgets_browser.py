"""The widgets in a real browser: JupyterLab (headless, 127.0.0.1) driven by Debian's chromium through playwright.

A notebook using every widget is opened and run; the page must show no widget/JS errors; switching the
LayoutComparer from facelift6 to uniform8 must change the plot; a comparer given a layout study must show its
measured table and plots; screenshots are saved as test artifacts in
`test-artifacts/browser/` (or `$FACELIFT_NB_ARTIFACTS`)."""
import os
import shutil
import time
from pathlib import Path

import pytest

from .lab import start_lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(.ci/run installs it with apt: apt-get install chromium)")

CELLS = [
    "import warnings; warnings.simplefilter('ignore')\n"
    "from facelift_nb.widgets import plot_cameras, LayoutComparer, SplatViewer, RigInspector, TurntablePlayer\n"
    "from facelift_nb.layouts import get_layout\nfrom facelift_nb.testing import head_scene\n"
    "from facelift_nb.render import render_turntable\n"
    "head = head_scene(3000)",
    "plot_cameras(get_layout('facelift6').cameras(), head, depth=0.6, title='frusta vs splats')",
    "cmp = LayoutComparer(['facelift6'], gaussians=head, render_hw=(64, 64)); cmp",
    "SplatViewer(head, get_layout('facelift6').cameras())",
    "RigInspector(get_layout('facelift6').cameras(), target='facelift6')",
    "TurntablePlayer(render_turntable(head, n_frames=12, hw=(96, 96), progress=False))",
    "import torch\nfrom facelift_nb.cameras import orbit\n"
    "from facelift_nb.evaluate import SyntheticSample, layout_study\nfrom facelift_nb.models.gslrm import GSLRM\n"
    "torch.manual_seed(0)\ngs = GSLRM(**GSLRM.tiny_config()).eval()\n"
    "study = layout_study(gs, [SyntheticSample(3, density=0.2)], ['uniform4', 'facelift6'],\n"
    "                     held_out=orbit([22.5, 135., 250.]))\n"
    "LayoutComparer(['uniform4', 'facelift6'], study=study)",
]
ERRORS = ("Error displaying widget", "Model not found", "Failed to load model class",
          "Traceback (most recent call last)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from start_lab(tmp_path_factory.mktemp("lab"), CELLS, "widgets.ipynb")


def test_widgets_render_and_respond(lab):
    from playwright.sync_api import sync_playwright
    url, token = lab
    default_art = Path(__file__).resolve().parents[2] / "test-artifacts"
    art = Path(os.environ.get("FACELIFT_NB_ARTIFACTS", default_art)) / "browser"
    art.mkdir(parents=True, exist_ok=True)
    console_errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--use-gl=swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.goto(f"{url}/lab/tree/widgets.ipynb?token={token}&reset", timeout=120_000)
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar-kernelStatus",
                               timeout=120_000)
        time.sleep(3)
        page.click("text=Run", timeout=30_000)
        page.click("text=Run All Cells", timeout=30_000)
        # wait until the last cell has produced its widget (the turntable's frame slider)
        page.wait_for_selector("b:text-is('Turntable')", timeout=240_000)
        time.sleep(5)
        page.screenshot(path=str(art / "after_run_all.png"))
        (art / "after_run_all.txt").write_text(page.inner_text(".jp-Notebook"))
        page.wait_for_selector(".js-plotly-plot", state="attached", timeout=120_000)
        time.sleep(5)
        for name in ("frusta vs splats", "rigs: facelift6", "rig (colour) vs facelift6 (grey)"):  # drawn late if busy
            page.wait_for_selector(f"text={name}", state="attached", timeout=60_000)
        text = page.inner_text(".jp-Notebook")
        assert not [e for e in ERRORS if e in text], [e for e in ERRORS if e in text]
        for name in ("Layout comparer", "Splat viewer", "Rig inspector", "Turntable", "frusta vs splats",
                     "rig (colour) vs facelift6 (grey)"):
            assert name in text, name
        page.screenshot(path=str(art / "notebook_top.png"), full_page=False)
        cells = page.locator(".jp-Notebook .jp-Cell")
        shots = ["frusta_vs_splats", "layout_comparer", "splat_viewer", "rig_inspector", "turntable_player"]
        for k, name in enumerate(shots, start=1):
            cells.nth(k).scroll_into_view_if_needed()
            time.sleep(1.5)
            cells.nth(k).screenshot(path=str(art / f"{k}_{name}.png"))
        # interact: switch the LayoutComparer from facelift6 to uniform8 and see the plot change
        page.locator("b:text-is('Layout comparer')").first.scroll_into_view_if_needed()
        assert page.locator("text=rigs: facelift6").count() >= 1
        page.locator(".widget-select-multiple select").first.select_option(["uniform8"])
        page.wait_for_selector("text=rigs: uniform8", timeout=60_000)  # the same plot, changed in place
        page.wait_for_selector("text=press the button", timeout=30_000)  # the renders wait for the button
        time.sleep(2)
        cells.nth(2).screenshot(path=str(art / "2_layout_comparer_uniform8.png"))
        assert page.locator("text=rigs: facelift6").count() == 0
        # the comparer given a study: the measured table and its two plots
        for name in ("measured psnr, held-out views (95% CI)", "psnr by held-out azimuth (elevation 0°)"):
            page.wait_for_selector(f"text={name}", state="attached", timeout=120_000)
        assert "measured" in cells.nth(6).inner_text() and "uniform4" in cells.nth(6).inner_text()
        cells.nth(6).scroll_into_view_if_needed()
        time.sleep(2)
        cells.nth(6).screenshot(path=str(art / "6_layout_comparer_study.png"))
        browser.close()
    assert not console_errors, console_errors[:5]
