"""Rewrap the `__all__` lists nbdev-export writes, so that no line of the library exceeds 120 characters.

nbdev-export wraps `__all__` at 120 characters and then prepends `__all__ = `, so the first line of a long list
reaches 130. This rewraps each list with the prefix counted, leaving everything else byte for byte. The test
command runs it right after nbdev-export (`nbdev-export && python tools/wrap_all.py`); run the two together after
editing a notebook. `--check` exits 1 (and changes nothing) when a module still needs it.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from textwrap import TextWrapper

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 120
_ALL = re.compile(r"^__all__ = \[.*?\]$", re.S | re.M)


def wrapped_all(names: list[str]) -> str:
    "The `__all__ = [...]` statement of `names`, wrapped at WIDTH with the prefix counted (nbdev's indent kept)."
    tw = TextWrapper(width=WIDTH, initial_indent="__all__ = ", subsequent_indent=" " * 11, break_long_words=False)
    return "\n".join(tw.wrap(str(list(names))))


def rewrap(source: str) -> str:
    "`source` with its module-level `__all__` statement rewrapped (unchanged when it has none)."
    m = _ALL.search(source)
    if m is None: return source
    names = ast.literal_eval(m.group(0).split("=", 1)[1].strip())
    return source[:m.start()] + wrapped_all(names) + source[m.end():]


def library_files() -> list[Path]:
    return sorted(p for p in (ROOT / "facelift_nb").rglob("*.py") if p.name != "_modidx.py")


if __name__ == "__main__":
    stale = [p for p in library_files() if rewrap(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]
    if "--check" in sys.argv[1:]:
        print("\n".join(f"{p.relative_to(ROOT)}: __all__ needs rewrapping" for p in stale) or "__all__ lists wrapped")
        sys.exit(1 if stale else 0)
    for p in stale: p.write_text(rewrap(p.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"rewrapped __all__ in {len(stale)} module(s)")
