"""Run every notebook's tests, so pytest's summary line covers them (cells flagged slow/gpu/weights are skipped)."""
import shutil
import subprocess
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1] / "nbs"
NBS = sorted(_ROOT.glob("[!_]*.ipynb")) + sorted((_ROOT / "tutorials").glob("[!_]*.ipynb"))


def test_notebooks_found():
    assert {p.stem for p in NBS} >= {"index", "00_cameras", "01_layouts", "compare_layouts", "your_rig", "fine_tune",
                                     "image_to_turntable"}


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    exe = shutil.which("nbdev-test")
    assert exe, "nbdev-test is not installed: pip install -e '.[dev]'"
    r = subprocess.run([exe, str(nb)], capture_output=True, text=True, cwd=nb.parent, timeout=600)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
