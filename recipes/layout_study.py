"""The measured layout study of nbs/16_evaluate.ipynb: the built-in model on its held-out synthetic subjects.

    python recipes/layout_study.py [--subjects 40] [--out layout_study_out]

Runs `facelift-nb layout-study --default` for uniform4, facelift6, uniform8 and a non-uniform six-view layout (front
half dense, the back view 20° above eye level), copies the PSNR figures into nbs/images/ and prints the markdown table
the notebook shows (with the machine and the date). Rerunning into the same folder resumes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
from pathlib import Path

import torch

from facelift_nb.cli import main
from facelift_nb.evaluate import load_study, study_table
from facelift_nb.layouts import ViewLayout

ROOT = Path(__file__).resolve().parents[1]
NONUNIFORM = ViewLayout.from_azimuths([0., 30., 90., 180., 270., 330.], [0., 0., 0., 20., 0., 0.], label="nonuniform6")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=40)
    ap.add_argument("--out", default="layout_study_out")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lay_file = out / "nonuniform6.json"
    lay_file.write_text(json.dumps(NONUNIFORM.to_dict()))
    t0 = datetime.datetime.now()
    for filters in ("facelift", "none"):  # as the pipeline delivers them, and the raw GS-LRM output (as its card)
        rc = main(["layout-study", "--default", "--subjects", str(a.subjects), "--layouts", "uniform4", "facelift6",
                   "uniform8", str(lay_file), "--filters", filters, "-o", str(out / filters)])
        if rc: raise SystemExit(rc)
    for name in ("psnr_per_layout.png", "psnr_by_azimuth.png"):
        shutil.copyfile(out / "facelift" / name, ROOT / "nbs" / "images" / f"layout_study_{name}")
    res = load_study(out / "facelift")
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads); date {t0:%Y-%m-%d}; "
          f"{len({r['sample'] for r in res.rows})} subjects, {len({r['view'] for r in res.rows})} held-out views each")
    for filters in ("facelift", "none"):
        print(f"\nfilters: {filters}")
        print(study_table(load_study(out / filters), markdown=True, metrics=("psnr", "ssim", "psnr_fg", "mask_iou")))
