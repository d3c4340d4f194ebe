"""Project-level checks: set-up files agree, README in step, the public entry points and the CLI work."""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    proj = _pyproject()["project"]
    want = set(proj["dependencies"]) | set(proj["optional-dependencies"]["dev"])
    text = (ROOT / "environment.yml").read_text()
    pip = set(re.findall(r"^ {6}- (\S+)$", text, flags=re.M))
    assert pip == want, f"environment.yml pip section differs: missing {want - pip}, extra {pip - want}"
    assert "python=3.11" in text


def test_dependencies_are_pinned_and_torch_is_the_cpu_wheel():
    proj = _pyproject()["project"]
    for dep in proj["dependencies"] + proj["optional-dependencies"]["dev"]:
        assert "==" in dep, f"{dep} is not pinned"
    assert "torch==2.13.0" in proj["dependencies"]


def test_nbdev_config():
    cfg = _pyproject()["tool"]["nbdev"]
    assert cfg["lib_path"] == "facelift_nb" and cfg["nbs_path"] == "nbs"
    assert cfg["tst_flags"] == "notest slow gpu weights"
    assert not (ROOT / "settings.ini").exists()
    assert (ROOT / "nbs" / "_quarto.yml").exists() and (ROOT / "nbs" / "nbdev.yml").exists()


def _readme_commands():
    return re.findall(r"```sh\n\s*(.+?)\n\s*```", (ROOT / "README.md").read_text())


def test_readme_states_two_commands_and_ci_runs_the_test_command():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].startswith("pip install") and "facelift-nb demo" in cmds[0]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == cmds[1].strip(), "the last line of .ci/run must be README's test command"
    assert cmds[1].rstrip().endswith("pytest"), "pytest runs last so its summary closes the log"


def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipeline_import():
    r = subprocess.run([sys.executable, "-c", "from facelift_nb import pipeline; print(pipeline.get_layout('facelift6').names)"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "front_right" in r.stdout


def test_cli_demo_runs_the_default_model(tmp_path):
    "README's main job, run as after a plain `pip install .`: the dev-only packages cannot be imported."
    from test_install import plain_install_env
    exe = shutil.which("facelift-nb")
    assert exe, "the facelift-nb console script is not installed: pip install -e ."
    (tmp_path / "site").mkdir()
    r = subprocess.run([exe, "demo", "-o", str(tmp_path / "out"), "--steps", "20", "--turntable", "12"], capture_output=True,
                       text=True, timeout=600, env=plain_install_env(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(["input.png", "multiview.png", "gaussians.ply", "renders.png", "turntable.mp4",
                                                            "cameras.json", "manifest.json", "overview.png"])
    with Image.open(out / "overview.png") as im:
        assert im.width > 600 and len(np.unique(np.asarray(im.convert("L")))) > 50  # a real picture, not a blank canvas
    with Image.open(out / "renders.png") as im:
        a = np.asarray(im.convert("L")).astype(float)
        assert 0.03 < (a < 200).mean() < 0.7  # a subject on white in every render strip, not empty and not a smear
    man = json.loads((out / "manifest.json").read_text())
    assert "weights/default/gslrm" in man["weights"]["gslrm"]["path"].replace("\\", "/") and man["weights"]["gslrm"]["files"]
    from facelift_nb.splats import load_ply
    assert 1000 < len(load_ply(out / "gaussians.ply")) <= 2 + 6 * 32 * 32
    from facelift_nb.cameras import Cameras
    from facelift_nb.layouts import get_layout
    cams = Cameras.from_facelift_json(out / "cameras.json")
    assert (cams.w2c - get_layout("facelift6").cameras().w2c).abs().max() < 1e-6
    r = subprocess.run([exe, "demo", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr  # never overwritten without asking


def test_cli_check_cameras_exit_codes(tmp_path):
    from facelift_nb.cameras import published_cameras_path
    ref_json = published_cameras_path()
    exe = shutil.which("facelift-nb")
    ok = subprocess.run([exe, "check-cameras", str(ref_json), "--radius", "2.7"], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = subprocess.run([exe, "check-cameras", str(ref_json), "--radius", "1.0"], capture_output=True, text=True)
    assert bad.returncode == 1 and "differs from the expected radius" in bad.stdout
