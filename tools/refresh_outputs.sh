#!/usr/bin/env bash
# Re-execute the notebooks so their small saved outputs (figures, reports) match the code, then clean,
# export and regenerate README.md. Slow-flagged cells run too (the train notebook takes a few minutes).
# Usage: bash tools/refresh_outputs.sh [nbs/NN_name.ipynb ...]   (default: every notebook)
set -euo pipefail
cd "$(dirname "$0")/.."
nbs=("$@"); [ ${#nbs[@]} -eq 0 ] && nbs=(nbs/[!_]*.ipynb)
for nb in "${nbs[@]}"; do
  [ "$nb" = nbs/12a_main.ipynb ] && continue  # its only cell is the `python -m` entry point (eval: false)
  if grep -q -E '#\| *(weights|gpu|notest)|eval: *false' "$nb"; then  # flagged cells must be skipped, as nbdev-test does
    nbdev-test --save "$nb" >/dev/null 2>&1 || { echo "FAILED: $nb"; exit 1; }
  else
    jupyter nbconvert --to notebook --execute --inplace "$nb" >/dev/null 2>&1 || { echo "FAILED: $nb"; exit 1; }
  fi
done
nbdev-clean && nbdev-export && python tools/sync_readme.py
