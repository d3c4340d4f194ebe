"""A plain `pip install .` works: every third-party import of the library is declared; no module needs a dev tool."""
import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "facelift_nb"
DEV_ONLY = ["fastcore", "nbdev", "execnb", "pytest", "hypothesis", "playwright", "jupytext", "mkdocs"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda deps: {_norm(re.split(r"[=<>!~\[; ]", d, maxsplit=1)[0]) for d in deps}
    return names(proj["dependencies"]), {k: names(v) for k, v in proj["optional-dependencies"].items()}


def _distribution(module: str) -> str:
    "The distribution that provides a top-level module (an uninstalled optional package: its own name)."
    dists = md.packages_distributions().get(module)
    return _norm(dists[0]) if dists else _norm(module)


def _imports(tree: ast.AST):
    "(top-level module, node, the enclosing function or None, the enclosing try blocks) for every absolute import."
    out = []
    def walk(node, func, tries):
        for child in ast.iter_child_nodes(node):
            f = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            t = tries + [child] if isinstance(child, ast.Try) else tries
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], child, func, tries) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], child, func, tries))
            walk(child, f, t)
    walk(tree, None, [])
    return out


def _handler_names_extra(tries, node, extra: str, source: str) -> bool:
    "The import sits in a try whose ImportError handler raises or warns with `facelift-nb[extra]`."
    for t in tries:
        if not any(node is n or node in ast.walk(n) for n in t.body): continue
        for h in t.handlers:
            caught = ast.unparse(h.type) if h.type is not None else ""
            names_extra = f"facelift-nb[{extra}]" in ast.get_source_segment(source, h)
            if ("ImportError" in caught or "ModuleNotFoundError" in caught) and names_extra:
                return True
    return False


def test_every_third_party_import_is_declared():
    core, extras = _requirements()
    problems = []
    for path in sorted(LIB.rglob("*.py")):
        if path.name == "_modidx.py": continue
        source = path.read_text()
        for module, node, func, tries in _imports(ast.parse(source)):
            if module in sys.stdlib_module_names or module in ("facelift_nb", "__future__"): continue
            dist, where = _distribution(module), f"{path.relative_to(ROOT)}:{node.lineno}"
            if dist in core: continue
            # a package of a user-facing extra may also be in `dev` (so the tests have it): it is optional, not dev-only
            extra = next((k for k, v in extras.items() if k != "dev" and dist in v), None)
            if extra is None and (dist in extras.get("dev", set()) or module in DEV_ONLY):
                problems.append(f"{where}: imports the dev-only package {module!r}")
                continue
            if extra is None:
                problems.append(f"{where}: imports {module!r} ({dist}), which is not a declared dependency")
            elif func is None:
                problems.append(f"{where}: the optional {module!r} (extra [{extra}]) is imported at module scope")
            elif not _handler_names_extra(tries, node, extra, source):
                problems.append(f"{where}: the optional {module!r} is imported without an ImportError naming "
                                f"facelift-nb[{extra}]")
    assert not problems, "\n".join(problems)


def test_the_import_check_catches_what_it_should():
    "The checker itself: an undeclared import, a module-scope optional import and an unguarded one are each found."
    src = "import numpy\nimport gsplat\ndef f():\n    import gsplat\ndef g():\n    try: import gsplat\n" \
          "    except ImportError as e: raise ImportError('pip install \"facelift-nb[gsplat]\"') from e\n"
    found = [(m, n.lineno, f is not None, _handler_names_extra(t, n, "gsplat", src))
             for m, n, f, t in _imports(ast.parse(src))]
    assert found == [("numpy", 1, False, False), ("gsplat", 2, False, False), ("gsplat", 4, True, False),
                     ("gsplat", 6, True, True)]


BLOCK_DEV = """
import sys
class _HideDevTools:
    "Wraps a meta-path finder so that the dev-only packages are not found, as if they were not installed."
    def __init__(self, finder): self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {dev!r}: return None
        return self.finder.find_spec(name, path, target) if hasattr(self.finder, "find_spec") else None
    def __getattr__(self, attr): return getattr(self.finder, attr)
sys.meta_path[:] = [_HideDevTools(f) for f in sys.meta_path]
"""


def plain_install_env(tmp_path) -> dict:
    "Environment of a subprocess in which the dev-only packages cannot be imported (as after `pip install .`)."
    (tmp_path / "sitecustomize.py").write_text(BLOCK_DEV.format(dev=DEV_ONLY))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path)


def test_every_module_imports_without_dev_tools(tmp_path):
    code = ("import importlib, pkgutil, facelift_nb\n"
            "try:\n    import fastcore\n    raise SystemExit('the dev-package block is not active')\n"
            "except ImportError: pass\n"
            "for m in pkgutil.walk_packages(facelift_nb.__path__, 'facelift_nb.'): importlib.import_module(m.name)\n"
            "from facelift_nb import pipeline\nprint('ok', pipeline.get_layout('facelift6').names)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plain_install_env(tmp_path),
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "front_right" in r.stdout
