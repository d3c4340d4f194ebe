"""Write README.md from nbs/index.ipynb (the docs' home page), so the two never drift.

nbdev's own `nbdev-readme` needs quarto; this renders the same content without it: the title, the summary
as a quote, markdown cells as they are and code cells as fenced Python. `--check` exits 1 when README.md
is out of step (the test suite runs this check).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def render_readme(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "README text rendered from the index notebook."
    nb = nbformat.read(nb_path, as_version=4)
    parts = ["<!-- Generated from nbs/index.ipynb by tools/sync_readme.py: edit the notebook, then run it. -->"]
    for cell in nb.cells:
        src = cell.source.strip()
        if not src or src.startswith("#| hide"): continue
        parts.append(src if cell.cell_type == "markdown" else f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, readme = render_readme(), ROOT / "README.md"
    if "--check" in sys.argv[1:]:
        ok = readme.exists() and readme.read_text(encoding="utf-8") == text
        print("README.md is in step with nbs/index.ipynb" if ok else
              "README.md differs from nbs/index.ipynb: run python tools/sync_readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
