"""Measure the Haar → MTCNN face-box calibration (`facelift_nb.framing.HAAR_CALIBRATION`) from correctly framed views.

A correctly framed view is a front view in the published training framing: its MTCNN face box is `FACE_SIZE` across
and centred on `FACE_CENTER` (512² canvas units; other square sizes are scaled). Each view is composited over white,
rescaled to several sizes (so the cascade's discrete search scales average out), searched with the same Haar settings
as `haar_face_boxes`, and its box mapped back to the view's pixels. The calibration is the mean ratio of the known
MTCNN size to the Haar size and the mean centre offset in units of the Haar size.

    python recipes/calibrate_face_box.py FOLDER [--pattern '**/cam_000.png']

The constants in facelift_nb/framing.py were measured with
    python recipes/calibrate_face_box.py $FACELIFT_NB_REFERENCE/facelift_data_sample/mvdiffusion
(one published front view, sample_000/cam_000.png).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facelift_nb.framing import FACE_CANVAS, FACE_CENTER, FACE_SIZE, haar_face_boxes

SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4)


def on_white(path: Path) -> Image.Image:
    "The view as RGB over white."
    im = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, im).convert("RGB")


def measure(path: Path) -> list[tuple[float, float, float]]:
    "Per scale: (MTCNN size / Haar size, centre dx / Haar size, centre dy / Haar size) for the largest Haar box."
    im = on_white(path)
    W, H = im.size
    if W != H: raise SystemExit(f"{path}: views must be square (the training framing is a square canvas); got {W}x{H}")
    u = W / FACE_CANVAS  # target numbers in this view's pixels
    size, cx, cy = FACE_SIZE * u, FACE_CENTER[0] * u, FACE_CENTER[1] * u
    rows = []
    for s in SCALES:
        n = round(W * s)
        boxes = haar_face_boxes(np.asarray(im.resize((n, n), Image.Resampling.BICUBIC))) * (W / n)
        if len(boxes) == 0: continue
        x0, y0, x1, y1 = boxes[((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax()]
        side = ((x1 - x0) + (y1 - y0)) / 2
        rows.append((size / side, (cx - (x0 + x1) / 2) / side, (cy - (y0 + y1) / 2) / side))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="folder of correctly framed front views")
    ap.add_argument("--pattern", default="**/cam_000.png", help="which files are front views (glob under FOLDER)")
    args = ap.parse_args(argv)
    views = sorted(args.folder.glob(args.pattern))
    if not views: raise SystemExit(f"no files matching {args.pattern!r} under {args.folder}")
    per_view = []
    for p in views:
        rows = measure(p)
        if not rows:
            print(f"{p}: no face found at any scale; skipped", file=sys.stderr)
            continue
        r = np.asarray(rows)
        per_view.append(r.mean(0))
        spread = 100 * r[:, 0].std() / r[:, 0].mean()
        print(f"{p}: {len(rows)}/{len(SCALES)} scales, size_factor {r[:, 0].mean():.4f} (spread {spread:.2f}%), "
              f"dx {r[:, 1].mean():.4f}, dy {r[:, 2].mean():.4f}")
    if not per_view: raise SystemExit("no face found in any view")
    k, dx, dy = np.mean(per_view, 0)
    print(f"\n{len(per_view)} view(s):")
    print(f"HAAR_CALIBRATION = BoxCalibration(size_factor={k:.4f}, dx={dx:.4f}, dy={dy:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
