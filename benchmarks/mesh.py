"""Benchmark: `to_mesh` on a GS-LRM-sized subject, stage by stage, and its TSDF fusion against a per-view loop.

Scene: a synthetic head (`make_subject(0, "head", density=195)`), 1,572,866 of its Gaussians chosen at random
(GS-LRM's output size for 6 views at 512²), every scale set to 0.005 (about one input pixel's footprint at the
subject, as GS-LRM's pixel-aligned Gaussians are). `to_mesh` runs with its defaults (32 views at 256²,
resolution 128); the script prints the stage times (render / fuse / extract / colour) and the total. The fusion is
then compared with a straightforward implementation on the same renders, measured in this run and interleaved:
one view at a time, in NumPy float64, every voxel of the box. It prints seconds and the ratio, and the peak RSS.
It never passes or fails on times. `--quick`: 50,000 Gaussians at resolution 64.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch

from facelift_nb.mesh import depth_facing, fuse_tsdf, mesh_box, sphere_views, to_mesh
from facelift_nb.render import render
from facelift_nb.splats import Gaussians
from facelift_nb.synthetic import make_subject

GSLRM_N = 1_572_866


def gslrm_sized_subject(n: int = GSLRM_N, scale: float = 0.005, seed: int = 0) -> Gaussians:
    "A synthetic head with `n` Gaussians of one small scale, like a GS-LRM output."
    g = make_subject(seed, "head", density=195 * n / GSLRM_N + 1)
    keep = torch.randperm(len(g), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    g = g[keep]
    return Gaussians(g.means, g.quats, torch.full_like(g.scales, scale), g.opacities, g.sh)


def reference_fuse(depth, alpha, cameras, lo, hi, resolution: int, truncation: float = 3., alpha_min: float = 0.5):
    "The straightforward fusion: a Python loop over views, each projecting every voxel (NumPy, float64)."
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    size = float((hi - lo).max()) / resolution
    counts = np.maximum(2, np.ceil((hi - lo) / size).astype(int) + 1)
    axes = [lo[i] + size * np.arange(counts[i]) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    facing = depth_facing(depth.float(), cameras).double().numpy() ** 2
    wsum, vsum, seen = np.zeros(len(pts)), np.zeros(len(pts)), np.zeros(len(pts), bool)
    V, H, W = depth.shape
    for v in range(V):
        K, w2c = cameras.K[v].double().numpy(), cameras.w2c[v].double().numpy()
        c = pts @ w2c[:3, :3].T + w2c[:3, 3]
        z = c[:, 2]
        zs = np.maximum(z, 1e-6)
        u = np.floor(K[0, 0] * c[:, 0] / zs + K[0, 2])
        r = np.floor(K[1, 1] * c[:, 1] / zs + K[1, 2])
        inside = (z > 1e-6) & (u >= 0) & (u < W) & (r >= 0) & (r < H)
        ui, ri = u[inside].astype(int), r[inside].astype(int)
        D, A, C = (depth[v].double().numpy()[ri, ui], alpha[v].double().numpy()[ri, ui], facing[v][ri, ui])
        sdf = np.minimum((D - z[inside]) / (truncation * size), 1.)
        free, near = A < alpha_min, (A >= alpha_min) & (sdf >= -1)
        w = np.where(free, 1 - A, np.where(near, A * C, 0.))
        idx = np.nonzero(inside)[0]
        wsum[idx] += w
        vsum[idx] += w * np.where(free, 1., sdf)
        seen |= inside
    out = np.where(wsum > 0, vsum / np.maximum(wsum, 1e-12), np.where(seen, -1., 1.))
    return out.reshape(*counts.tolist()), size


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(quick: bool = False, repeats: int = 3):
    n, resolution = (50_000, 64) if quick else (GSLRM_N, 128)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"{time.strftime('%Y-%m-%d')}")
    g = gslrm_sized_subject(n)
    stages = {}
    total, mesh = _timed(lambda: to_mesh(g, resolution=resolution, timings=stages))
    print(f"to_mesh on {n:,} Gaussians (32 views at 256², resolution {resolution}): {total:.1f} s -> {mesh}")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    lo, hi = mesh_box(g)
    cams = sphere_views(32, lo, hi, (256, 256))
    out = render(g, cams, bg=(0., 0., 0.), backend="cpu")
    fast, ref = [], []
    for _ in range(repeats):  # interleaved
        fast.append(_timed(lambda: fuse_tsdf(out.depth, out.alpha, cams, lo, hi, resolution))[0])
        ref.append(_timed(lambda: reference_fuse(out.depth, out.alpha, cams, lo, hi, resolution))[0])
    f, r = statistics.median(fast), statistics.median(ref)
    print(f"fusion of 32 views at resolution {resolution}: library {f:.2f} s, per-view loop {r:.2f} s, "
          f"ratio loop/library {r / f:.2f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB")
    return stages


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50,000 Gaussians at resolution 64")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    main(a.quick, a.repeats)
