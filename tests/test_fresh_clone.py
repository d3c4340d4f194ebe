"""A fresh clone has no reference folder: only the `reference` tests skip (with the reason), nothing fails, nothing
errors, and no notebook depends on the reference data."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_REFERENCE = "/nonexistent/facelift_nb_reference"


def _pytest(*args):
    "pytest in a subprocess, as on a fresh clone (no reference data), from the repository root."
    env = {**os.environ, "FACELIFT_NB_REFERENCE": NO_REFERENCE}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def _counts(summary: str) -> dict:
    return {k.rstrip("s"): int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}


@pytest.fixture(scope="module")
def reference_run():
    "`pytest -m reference` over the whole suite: it collects every test file and runs only the `reference` tests."
    r = _pytest("tests", "-m", "reference", "-q", "-rs")
    return r, r.stdout + r.stderr


def test_whole_suite_collects_without_the_reference(reference_run):
    r, out = reference_run
    counts = _counts(out.strip().splitlines()[-1])
    assert counts.get("error", 0) == 0 and "ERROR collecting" not in out, out[-3000:]
    assert counts.get("deselected", 0) > 100, out[-3000:]  # the rest of the suite was collected (and deselected)


def test_reference_tests_only_skip_without_the_reference(reference_run):
    r, out = reference_run
    assert r.returncode == 0, out[-3000:]
    counts = _counts(out.strip().splitlines()[-1])
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, out[-3000:]
    # every selected test skipped ...
    assert counts.get("passed", 0) == 0 and counts.get("skipped", 0) >= 5, out[-3000:]
    reasons = [l for l in out.splitlines() if l.startswith("SKIPPED")]
    assert reasons and all("needs the optional reference data" in l for l in reasons), reasons  # ... for the reason


def test_no_notebook_depends_on_the_reference_data():
    "A notebook may show the real upstream files where they exist, but only in a cell that checks `has_reference` first"
    nbs = sorted((ROOT / "nbs").rglob("*.ipynb"))
    assert len(nbs) > 10
    users = []
    for nb in nbs:
        if nb.name == "14_testing.ipynb" or nb.name.startswith("_"):  # where `reference_path` is defined and explained
            continue
        for i, c in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            code = "".join(c["source"]) if c["cell_type"] == "code" else ""
            if "shared/reference" in code or (re.search(r"\breference_path\(", code) and "has_reference(" not in code):
                users.append(f"{nb.relative_to(ROOT).as_posix()} cell {i}")
    assert users == [], f"notebooks must run without the reference folder; these cells need it unguarded: {users}"


def test_shipped_camera_files_are_package_data():
    import fnmatch
    import tomllib

    from facelift_nb.cameras import PUBLISHED_CAMERA_FILES, published_cameras_path
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facelift_nb"]
    pkg = ROOT / "facelift_nb"
    shipped = [published_cameras_path(rig).relative_to(pkg) for rig in PUBLISHED_CAMERA_FILES]
    shipped += [Path("assets/PROVENANCE.md")]
    assert (pkg / "assets" / "PROVENANCE.md").is_file()
    assert all(any(fnmatch.fnmatch(p.as_posix(), g) for g in globs) for p in shipped), (shipped, globs)
