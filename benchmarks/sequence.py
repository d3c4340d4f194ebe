"""Benchmark: sequences on the CPU with the built-in model, frames per second and the share of time per stage.

1. A 6-camera rig recording (`make_rig_sequence`, a head, 24 frames at 64², RGBA folders): `reconstruct_rig_sequence`
   end to end with GS-LRM batches of 1, 2, 4 and 8 frames (median of 3 round-robin runs, ratio against batch 1,
   measured in the same run), then its stages timed one by one on the same frames: decoding, input preparation,
   GS-LRM, PLY writing, videos.
2. One front-view video (`make_front_video`, 24 frames at 64²): `FaceLiftPipeline.sequence` end to end, and its
   stages: framing, the multi-view stage (DDIM steps as given), GS-LRM, PLY writing, videos.
Ratios and shares, and frames/s of this machine for the record; no pass/fail.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facelift_nb.builtin import WEIGHTS_DIR
from facelift_nb.cameras import Cameras
from facelift_nb.frames import open_frames, open_store, read_frames, read_rig, sequence_videos
from facelift_nb.motion import make_front_video, make_rig_sequence
from facelift_nb.pipeline import FaceLiftPipeline, _sequence_framer, load_gslrm
from facelift_nb.sequence import first_masks, frame_views, open_rig, posed_rig, reconstruct_rig_sequence, square_box


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def rig(tmp: Path, n_frames: int, batches: tuple[int, ...], repeats: int) -> None:
    rec = make_rig_sequence(tmp / "rig", "head", n_frames=n_frames, size=64)
    gslrm, _ = load_gslrm(WEIGHTS_DIR / "gslrm")
    cams_file = rec.folder / "opencv_cameras.json"
    reconstruct_rig_sequence(gslrm, cams_file, tmp / "warm", end=2, videos=False, progress=False)  # compile, cache
    print(f"\n## rig: 6 cameras at 64², {n_frames} frames, built-in GS-LRM (32²)\n")
    print(f"| GS-LRM batch | frames/s (median of {repeats}) | vs batch 1 |\n|---|---|---|")
    times = {b: [] for b in batches}
    for r in range(repeats):  # round robin, so that a slow spell of a shared machine hits every batch size alike
        for b in batches:
            t, _ = _timed(lambda: reconstruct_rig_sequence(gslrm, cams_file, tmp / f"b{b}-{r}", batch=b, videos=False,
                                                           progress=False))
            times[b].append(t)
    med = {b: statistics.median(v) for b, v in times.items()}
    for b in batches: print(f"| {b} | {n_frames / med[b]:.1f} | {med[batches[0]] / med[b]:.2f}x |")
    b = max(batches)
    cams, sources = open_rig(cams_file)
    posed = posed_rig(cams, layout="facelift6", masks=first_masks(sources, 0))  # as the run poses it (center_from)
    chosen = [sources[i] for i in posed.indices]
    S = gslrm.config.image_size
    t_read, items = _timed(lambda: [x for _, x in read_rig(chosen)])
    t_prep, views = _timed(lambda: [frame_views(ims, S) for ims in items])
    cs = posed.cameras.crop(square_box(posed.cameras.hw)).resize((S, S))
    def gs_all():
        out = []
        with torch.no_grad():
            for k in range(0, n_frames, b):
                x = torch.stack(views[k:k + b])
                out += gslrm.reconstruct(x, Cameras.stack([cs] * len(x)))
        return out
    t_gs, gs = _timed(gs_all)
    store = open_store(tmp / "stages", {"bench": 1})
    t_write, _ = _timed(lambda: [store.write_frame(i, g, {"time_s": i / rec.fps}) for i, g in enumerate(gs)])
    cam = posed.cameras[[0]].crop(square_box(posed.cameras.hw)).resize((256, 256))
    t_vid, _ = _timed(lambda: sequence_videos(store, range(n_frames), cam, rec.fps, read_frames(chosen[0]),
                                              progress=False))
    _shares({"decode frames": t_read, "inputs (composite, resize)": t_prep, f"GS-LRM (batch {b})": t_gs,
             "write PLY + record": t_write, "videos (3 × 256², stability)": t_vid}, n_frames)


def video(tmp: Path, n_frames: int, steps: int) -> None:
    fv = make_front_video(tmp / "front.mp4", "head", n_frames=n_frames, size=64)
    pipe = FaceLiftPipeline.default()
    pipe.sequence(fv.path, tmp / "vwarm", num_inference_steps=steps, end=1, videos=False, progress=False)
    print(f"\n## single video: 64², {n_frames} frames, built-in pipeline, {steps} DDIM steps\n")
    t, _ = _timed(lambda: pipe.sequence(fv.path, tmp / "v", num_inference_steps=steps, videos=False, progress=False))
    print(f"end to end (no videos): {n_frames / t:.3g} frames/s\n")
    src = open_frames(fv.path)
    mv, S = pipe.mvdiffusion, pipe.gslrm.config.image_size
    mv.set_progress_bar_config(disable=True)
    frame = _sequence_framer(pipe, src, 0, pipe.fill, (1., 1., 1.), False, True)  # the first frame's framing, reused
    t_frame, framed = _timed(lambda: [frame(x)[0] for _, x in read_frames(src)])
    t_mv, views = _timed(lambda: [mv(f, num_inference_steps=steps, generator=4) for f in framed])
    cams = mv.layout.cameras(hw=(S, S))
    t_gs, gs = _timed(lambda: [pipe.reconstruct(v.images, cams) for v in views])
    store = open_store(tmp / "vstages", {"bench": 2})
    t_write, _ = _timed(lambda: [store.write_frame(i, g, {"time_s": i / fv.fps}) for i, g in enumerate(gs)])
    t_vid, _ = _timed(lambda: sequence_videos(store, range(n_frames), cams[[0]].resize((256, 256)), fv.fps,
                                              progress=False))
    _shares({"decode + framing": t_frame, f"multi-view stage ({steps} steps)": t_mv, "GS-LRM": t_gs,
             "write PLY + record": t_write, "videos (2 × 256², stability)": t_vid}, n_frames)


def _shares(times: dict, n: int) -> None:
    total = sum(times.values())
    print("| stage | share | ms/frame |\n|---|---|---|")
    for k, v in times.items(): print(f"| {k} | {100 * v / total:.0f}% | {1e3 * v / n:.1f} |")
    print(f"| all stages | 100% | {1e3 * total / n:.1f} ({n / total:.3g} frames/s) |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the single-video run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the rig at each batch size (median)")
    p.add_argument("--quick", action="store_true", help="8 frames, 4 steps, batches 1 and 4, one repeat (the test)")
    a = p.parse_args(argv)
    n, steps, batches, repeats = (8, 4, (1, 4), 1) if a.quick else (a.frames, a.steps, (1, 2, 4, 8), a.repeats)
    print(f"# sequence benchmark: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as d:
        rig(Path(d), n, batches, repeats)
        video(Path(d), n, steps)


if __name__ == "__main__":
    main()
