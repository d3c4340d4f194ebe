"""The documentation site builds offline (tools/build_docs.py: nbdev-proc-nbs → Markdown → mkdocs) and its pages render
in chromium: the index page, navigation to an API page, and that the rendered figures load."""
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_docs  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the offline docs build needs mkdocs (pip install -e '.[dev]')")
    return build_docs.build(tmp_path_factory.mktemp("site") / "_site")


def test_site_builds_with_api_pages_and_figures(site):
    root = site.parent
    pages = {p.name for p in root.glob("*.html")}
    assert {"index.html", "00c_formats.html", "03_render.html", "00_cameras.html", "07_pipeline.html"} <= pages
    assert "Published FaceLift formats" in (root / "00c_formats.html").read_text()
    render = (root / "03_render.html").read_text()
    assert "render_turntable" in render and "<img" in render
    imgs = list((root / "03_render_files").glob("*.png"))
    assert imgs and all(p.stat().st_size > 1000 for p in imgs)
    assert "Home" in (root / "index.html").read_text()
    with pytest.raises(FileExistsError, match="not a site built here"):
        other = root.parent / "not_a_site"
        other.mkdir()
        (other / "keep.txt").write_text("x")
        build_docs.build(other, proc=ROOT / "_proc")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_site_pages_render_in_the_browser(site):
    from playwright.sync_api import sync_playwright
    art = Path(os.environ.get("FACELIFT_NB_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    art.mkdir(parents=True, exist_ok=True)
    errors = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1300, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.as_uri())
        assert "facelift_nb" in page.title()
        page.screenshot(path=str(art / "docs_index.png"))
        page.locator("a.md-nav__link[href='03_render.html']:visible").first.click()  # navigate to an API page
        page.wait_for_load_state()
        assert page.url.endswith("03_render.html")
        page.locator("img").first.scroll_into_view_if_needed()
        loaded = page.evaluate("Array.from(document.querySelectorAll('article img'))"
                               ".map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded), loaded
        page.screenshot(path=str(art / "docs_render_page.png"), full_page=False)
        b.close()
    assert not errors, errors[:3]
