"""Project-level checks: set-up files agree, README in step, the public entry points and the CLI work."""
import ast
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
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_readme.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipeline_import():
    code = "from facelift_nb import pipeline; print(pipeline.get_layout('facelift6').names)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "front_right" in r.stdout


def test_cli_demo_runs_the_default_model(tmp_path):
    "README's main job, run as after a plain `pip install .`: the dev-only packages cannot be imported."
    from test_install import plain_install_env
    exe = shutil.which("facelift-nb")
    assert exe, "the facelift-nb console script is not installed: pip install -e ."
    (tmp_path / "site").mkdir()
    r = subprocess.run([exe, "demo", "-o", str(tmp_path / "out"), "--steps", "20", "--turntable", "12"],
                       capture_output=True, text=True, timeout=600, env=plain_install_env(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(["input.png", "multiview.png", "gaussians.ply",
                                                            "renders.png", "turntable.mp4", "cameras.json",
                                                            "manifest.json", "overview.png"])
    with Image.open(out / "overview.png") as im:
        assert im.width > 600 and len(np.unique(np.asarray(im.convert("L")))) > 50  # a real picture, not a blank canvas
    with Image.open(out / "renders.png") as im:
        a = np.asarray(im.convert("L")).astype(float)
        assert 0.03 < (a < 200).mean() < 0.7  # a subject on white in every render strip, not empty and not a smear
    man = json.loads((out / "manifest.json").read_text())
    gslrm_weights = man["weights"]["gslrm"]
    assert "weights/default/gslrm" in gslrm_weights["path"].replace("\\", "/") and gslrm_weights["files"]
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


# ---------------------------------------------------------------------------------------------------------------------
# House rules checked on the whole tree. Each checker is a plain function with a test that plants a fault it must find.

LIB = ROOT / "facelift_nb"
PRODUCT = ["nbs", "facelift_nb", "README.md", "tests", "benchmarks", "recipes"]


def _library_files():
    return sorted(p for p in LIB.rglob("*.py") if p.name != "_modidx.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(source: str, module: str) -> list[str]:
    "`line: from X import _name` for every private name `module` imports from another facelift_nb module."
    pkg = module.split(".")
    out = []
    for node in ast.walk(ast.parse(source)):  # module scope, functions, try blocks, parenthesised imports alike
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = pkg[:len(pkg) - node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else: target = node.module or ""
            if target.split(".")[0] != "facelift_nb": continue
            out += [f"{node.lineno}: from {target} import {a.name}" for a in node.names if _is_private(a.name)]
            out += [f"{node.lineno}: from {target} import {a.name} (a private module)" for a in node.names
                    if not _is_private(a.name) and any(_is_private(p) for p in target.split("."))]
        elif isinstance(node, ast.Import):
            out += [f"{node.lineno}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] == "facelift_nb" and any(_is_private(p) for p in a.name.split("."))]
    return out


def test_private_import_checker_finds_planted_faults():
    src = ("from .cameras import _shape, Cameras\n"
           "from facelift_nb.layouts import (\n    get_layout,\n    _assign,\n)\n"
           "def f():\n    from ..render import _numba\n    return _numba\n"
           "try:\n    from facelift_nb import _modidx\nexcept ImportError: pass\n"
           "from facelift_nb import __version__\nfrom os.path import _get_sep\nfrom typing import Any\n")
    found = private_imports(src, "facelift_nb.train.gslrm")
    assert found == ["1: from facelift_nb.train.cameras import _shape", "2: from facelift_nb.layouts import _assign",
                     "7: from facelift_nb.render import _numba", "10: from facelift_nb import _modidx"], found
    assert private_imports("from ._x import y\n", "facelift_nb.a") == [
        "1: from facelift_nb._x import y (a private module)"]
    assert private_imports("from .cameras import Cameras, look_at\n", "facelift_nb.layouts") == []


def test_no_private_names_imported_across_library_modules():
    problems = [f"{p.relative_to(ROOT)}:{hit}" for p in _library_files()
                for hit in private_imports(p.read_text(encoding="utf-8"), _module_name(p))]
    assert not problems, "a helper another module needs is public and documented:\n" + "\n".join(problems)


# The house order: a module imports only modules of a lower rank (to its left), at module level or lazily alike.
HOUSE_ORDER = [["io"], ["colmap", "transforms_json"], ["cameras"], ["layouts"], ["splats"], ["exports"],
               ["render_kernels"], ["render"], ["mesh"], ["synthetic", "models.gslrm", "models.mvdiffusion"],
               ["testing", "checkpoints", "motion"], ["framing", "metrics", "builtin", "frames"], ["train.common"],
               ["train.gslrm", "train.mvdiffusion"], ["pipeline"], ["data"], ["default_model", "viz"], ["evaluate"],
               ["sequence"], ["widgets"], ["cli"], ["__main__"]]
RANK = {m: r for r, group in enumerate(HOUSE_ORDER) for m in group}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    "`(line, module)` for every facelift_nb module `module` imports (relative imports resolved; `from . import x`)."
    pkg, out = module.split("."), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "facelift_nb": continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}".removeprefix("facelift_nb.")
                    in RANK]
            out += [(node.lineno, t) for t in (subs or [target])]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "facelift_nb"]
    return [(ln, t.removeprefix("facelift_nb").lstrip(".")) for ln, t in out if t != "facelift_nb"]


def test_house_order_checker_finds_planted_faults():
    src = "from .render import render\nfrom . import cameras\ndef f():\n    from facelift_nb.data import x\n"
    assert imported_modules(src, "facelift_nb.splats") == [(1, "render"), (2, "cameras"), (4, "data")]
    assert imported_modules("from . import common\nimport facelift_nb\n", "facelift_nb.train.gslrm") == [
        (1, "train.common")]


def test_every_module_imports_only_to_its_left():
    problems, unranked = [], []
    for p in _library_files():
        mod = _module_name(p).removeprefix("facelift_nb").lstrip(".")
        if mod in ("", "models", "train"): continue
        if mod not in RANK: unranked.append(mod)
        for ln, target in imported_modules(p.read_text(encoding="utf-8"), _module_name(p)):
            if target not in RANK: unranked.append(target)
            elif mod in RANK and RANK[target] >= RANK[mod]: problems.append(f"{p.relative_to(ROOT)}:{ln}: {target}")
    assert not unranked, f"give these modules a place in HOUSE_ORDER (and README's order): {sorted(set(unranked))}"
    assert not problems, "imports against the house order (or a cycle):\n" + "\n".join(problems)


def patched_classes(source: str) -> list[str]:
    "`line: what` for every `@patch`-style decorator and every class attribute assigned from outside the class."
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:
                name = ast.unparse(d.func if isinstance(d, ast.Call) else d).split(".")[-1]
                if name in ("patch", "patch_to", "patch_property"): out.append(f"{d.lineno}: @{name} on {node.name}")
    for node in ast.parse(source).body:  # module scope: `Cls.method = fn` or setattr(Cls, ...)
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id[:1].isupper():
                out.append(f"{node.lineno}: {ast.unparse(t)} assigned outside its class")
        call = node.value if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) else None
        if call is not None and ast.unparse(call.func) == "setattr":
            out.append(f"{node.lineno}: {ast.unparse(node.value)}")
    return out


def test_patch_checker_finds_planted_faults():
    src = ("@patch\ndef to_x(self: Cameras): pass\n@fc.patch_to(Cameras)\ndef g(self): pass\n"
           "Cameras.to_y = to_x\nsetattr(Cameras, 'z', 1)\nCONST = 3\nx.y = 2\n")
    assert patched_classes(src) == ["1: @patch on to_x", "3: @patch_to on g",
                                    "5: Cameras.to_y assigned outside its class", "6: setattr(Cameras, 'z', 1)"]


def test_no_patching_in_the_library():
    "Methods are defined in their class (fastcore itself is kept out of the library by tests/test_install.py)."
    problems = [f"{p.relative_to(ROOT)}:{hit}" for p in _library_files()
                for hit in patched_classes(p.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


# written with [.] classes so that this file does not match itself
OUTSIDE_REFS = re.compile(r"\bFACT[S]\b|\bSTYL[E]\.md\b|\.\./share[d]\b|/work/share[d]\b")
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".yml", ".yaml", ".txt", ".json", ".toml", ".cfg", ".css", ".c", ".h", ".sh",
                 ".html", ".js", ".qmd", ".ini"}


def outside_refs(text: str) -> list[str]:
    "`line: text` for every line that refers to a file outside the repository."
    return [f"{i}: {line.strip()[:100]}" for i, line in enumerate(text.splitlines(), 1) if OUTSIDE_REFS.search(line)]


def test_outside_ref_checker_finds_planted_faults():
    facts, shared, style = "FACT" + "S", ".." + "/shared", "STYL" + "E.md"
    text = (f"ok\nsee {facts}.md section 3\n({facts} §4)\n{shared}/x\n{style}\n"
            "ARTIFACTS.md and test-artifacts\nshared/reference\n")
    assert [h.split(":")[0] for h in outside_refs(text)] == ["2", "3", "4", "5"]


def _product_files():
    for top in PRODUCT:
        p = ROOT / top
        files = [p] if p.is_file() else sorted(p.rglob("*"))
        for f in files:
            rel = f.relative_to(ROOT).parts
            generated = any(s in ("_proc", "_docs", "__pycache__") for s in rel)
            if f.is_file() and f.suffix in TEXT_SUFFIXES and not generated:
                yield f


def test_no_reference_to_files_outside_the_repo():
    "The product states its conventions in its own words (nbs/00c_formats.ipynb), never pointing outside the repo."
    problems = [f"{f.relative_to(ROOT)}:{hit}" for f in _product_files()
                for hit in outside_refs(f.read_text(encoding="utf-8", errors="replace"))]
    assert not problems, "\n".join(problems)


TIMING = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s|sec|secs|seconds|min|mins|minutes)\b"
                    r"|\d(?:\.\d+)?\s?(?:it/s|s/it)\b|Wall time|CPU times|\[\d\d:\d\d<")


def output_timings(nb: dict) -> list[str]:
    "`cell N: text` for every committed output (stream or text/plain) that holds a wall-clock time."
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code": continue
        src = "".join(cell.get("source", ""))
        if re.match(r"\s*%%?(time|timeit)\b", src): out.append(f"cell {i} ({cell.get('id')}): a %time/%timeit cell")
        for o in cell.get("outputs", []):
            text = o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            out += [f"cell {i} ({cell.get('id')}): {text[max(0, m.start() - 40):m.end() + 10]!r}"
                    for m in TIMING.finditer(text)]
    return out


def test_timing_checker_finds_planted_faults():
    def nb(text, kind="stream", src="x"):
        o = ({"output_type": kind, "text": text} if kind == "stream" else
             {"output_type": kind, "data": {"text/plain": text}})
        return {"cells": [{"cell_type": "code", "source": src, "outputs": [o]}]}
    for bad in ["took 0.034s", "in 5.9 s (views 4.2 s)", "{'total': '1.59s'}", "12 ms per frame", "3720.83it/s",
                "100%|##| 40/40 [00:00<00:00]", "Wall time: 2.1 s", "1.5 seconds"]:
        assert output_timings(nb(bad)), bad
    assert output_timings(nb("{'total': '1.59s'}", kind="execute_result"))
    assert output_timings(nb("", src="%%time\nx = 1"))
    for good in ["6 views at 512²", "sample_000s", "534 Gaussians", "loss 0.25", "cam_005.png", "v1.5", "steps: 50",
                 "2.7 units"]:
        assert not output_timings(nb(good)), good


def test_no_wall_clock_timings_in_committed_outputs():
    "Saved outputs are deterministic: measured speeds belong in a benchmark table with the machine and date."
    problems = []
    for p in sorted((ROOT / "nbs").rglob("*.ipynb")):
        rel = p.relative_to(ROOT)
        if any(s.startswith(("_", ".")) for s in rel.parts[1:]): continue  # scratch notebooks and checkpoints
        problems += [f"{rel} {hit}" for hit in output_timings(json.loads(p.read_text(encoding="utf-8")))]
    assert not problems, "\n".join(problems)


def _ruff(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "json", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_ruff_config_keeps_long_lines_and_semicolons_on():
    cfg = _pyproject()["tool"]["ruff"]
    lint = cfg["lint"]
    assert cfg["line-length"] == 120 and {"E", "F", "W", "I"} <= set(lint["select"])
    per_file = lint.get("per-file-ignores", {})
    ignored = set(lint.get("ignore", [])) | {r for glob, rules in per_file.items() for r in rules
                                             if not (glob == "facelift_nb/**" and r == "E501")}
    assert not ignored & {"E", "E5", "E501", "E7", "E70", "E702", "E703", "F"}, ignored
    # long lines of the exported files are checked by test_library_lines_at_most_120_and_one_statement_per_line


def test_ruff_catches_planted_long_line_and_semicolon(tmp_path):
    (tmp_path / "bad.py").write_text("a = 1; b = 2\nc = " + repr("x" * 130) + "\n")
    r = _ruff("--config", str(ROOT / "pyproject.toml"), str(tmp_path / "bad.py"))
    assert r.returncode == 1
    assert sorted(d["code"] for d in json.loads(r.stdout)) == ["E501", "E702"], r.stdout


def test_ruff_check_passes_on_the_whole_repo():
    r = _ruff(".")
    assert r.returncode in (0, 1), r.stderr
    found = [f"{Path(d['filename']).relative_to(ROOT)}:{d['location']['row']}: {d['code']} {d['message']}"
             for d in json.loads(r.stdout)]
    assert r.returncode == 0 and not found, f"{len(found)} ruff findings:\n" + "\n".join(found[:200])


def test_library_lines_at_most_120_and_one_statement_per_line():
    """The exported modules themselves (not only the notebooks they come from): no line over 120 characters but the
    first line of the `__all__` nbdev-export writes (it wraps the list at 120, then prepends `__all__ = `), and
    ruff's E702 (no `;`-joined statements)."""
    long = [f"{p.relative_to(ROOT)}:{i}: {line[:60]}" for p in sorted((ROOT / "facelift_nb").rglob("*.py"))
            if p.name != "_modidx.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > 120 and not (line.startswith("__all__ = [") and len(line) <= 130)]
    assert not long, f"{len(long)} lines over 120 characters:\n" + "\n".join(long[:200])
    r = _ruff("--select", "E702", "facelift_nb")
    assert r.returncode in (0, 1), r.stderr
    found = [f"{Path(d['filename']).relative_to(ROOT)}:{d['location']['row']}: {d['code']}"
             for d in json.loads(r.stdout)]
    assert not found, f"{len(found)} ;-joined statements:\n" + "\n".join(found)
