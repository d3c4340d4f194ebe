"""Build the documentation site offline, without quarto: nbdev's processed notebooks → Markdown → mkdocs (material).

    python tools/build_docs.py --out _site        # then open _site/index.html

Steps: `nbdev-proc-nbs` writes the processed notebooks to `_proc/` (directives applied, hidden cells removed,
`show_doc` rendered, exactly what `nbdev-docs` would hand to quarto); each is converted to Markdown with nbconvert
(figures extracted as PNG files next to the page); mkdocs builds a static site with one page per notebook, in
notebook order, titled by the notebook's first heading. Where quarto exists, `nbdev-docs` builds the quarto site
from the same `_proc/` notebooks instead.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _title(nb) -> str:
    for c in nb.cells:  # nbdev's processing turns the notebook's `# title` into front matter in a raw cell
        if c.cell_type == "raw":
            m = re.search(r"^title:\s*(.+)$", c.source, re.M)
            if m: return m.group(1).strip().strip("'\"")
    for c in nb.cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, re.M)
            if m: return m.group(1).strip()
    return "page"


def build(out: Path, proc: Path | None = None) -> Path:
    "Build the site into `out`; returns the path of its index.html."
    import nbformat
    from nbconvert import MarkdownExporter
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / ".facelift_docs").is_file():
        raise FileExistsError(f"{out} exists and is not a site built here; mkdocs would replace its contents. "
                              "Pick another --out.")
    if proc is None:
        sidebar = ROOT / "nbs" / "sidebar.yml"  # nbdev-proc-nbs rewrites it (quarto's sidebar; this site has its own)
        kept = sidebar.read_bytes() if sidebar.is_file() else None
        try: subprocess.run(["nbdev-proc-nbs"], cwd=ROOT, check=True, capture_output=True, text=True)
        finally:
            if kept is not None: sidebar.write_bytes(kept)  # a docs build leaves the tracked tree as it was
        proc = ROOT / "_proc"
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        nav = []
        tutorials = []
        pages = sorted(proc.glob("*.ipynb"), key=lambda p: (p.stem != "index", p.stem))
        for nbp in pages + sorted(proc.glob("tutorials/*.ipynb")):
            nb = nbformat.read(nbp, 4)
            title = _title(nb)
            # front matter: not for mkdocs
            nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and c.source.lstrip().startswith("---"))]
            for c in nb.cells:  # nbdev's processing leaves its own bookkeeping keys; the exporter validates strictly
                keep = ("cell_type", "metadata", "source", "outputs", "execution_count", "id", "attachments")
                for k in [k for k in c if k not in keep]: del c[k]
                c.metadata.pop("execution", None)
            for c in nb.cells:  # plotly/widget outputs cannot render in static Markdown: keep their text, drop the rest
                for o in c.get("outputs", []):
                    if "data" in o:
                        drop = [k for k in o["data"]
                                if k.startswith("application/vnd.") or k == "application/javascript"]
                        for k in drop: del o["data"][k]
            name = "index" if nbp.stem == "index" else str(nbp.relative_to(proc).with_suffix("")).replace("/", "_")
            body, res = MarkdownExporter().from_notebook_node(nb, resources={"output_files_dir": f"{name}_files"})
            for fn, data in res.get("outputs", {}).items():
                (docs / fn).parent.mkdir(parents=True, exist_ok=True)
                (docs / fn).write_bytes(data)
            if not body.lstrip().startswith("# "): body = f"# {title}\n\n{body}"
            (docs / f"{name}.md").write_text(body, encoding="utf-8")
            entry = {title if name != "index" else "Home": f"{name}.md"}
            (tutorials if nbp.parent.name == "tutorials" else nav).append(entry)
        if tutorials: nav.insert(1, {"Tutorials": tutorials})
        cfg = {"site_name": "facelift_nb", "docs_dir": str(docs), "site_dir": str(out), "use_directory_urls": False,
               "theme": {"name": "material", "features": ["navigation.sections"]}, "nav": nav,
               "markdown_extensions": ["tables", "toc", "pymdownx.superfences", "pymdownx.highlight"]}
        (Path(tmp) / "mkdocs.yml").write_text(json.dumps(cfg), encoding="utf-8")  # YAML accepts JSON
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(Path(tmp) / "mkdocs.yml")],
                           capture_output=True, text=True)
        if r.returncode != 0: raise RuntimeError(f"mkdocs build failed:\n{r.stderr[-3000:]}")
    (out / ".facelift_docs").write_text("built by tools/build_docs.py; rebuilding replaces this folder's contents\n")
    return out / "index.html"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="_site", help="output folder (default: _site)")
    a = p.parse_args()
    print(f"wrote {build(Path(a.out))}")
