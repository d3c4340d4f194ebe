"""Benchmark: the fast CPU renderer against a straightforward vectorised tile-based PyTorch rasteriser.

Scenes: Gaussians on a sphere shell of radius 0.5, scales 0.002-0.01, camera at distance 2.7,
FOV 30 deg. (a) 4,096 Gaussians at 256², (b) 200k at 512², (c) 1,572,866 (GS-LRM's output size) at 512².
Both are measured in this run, interleaved; the script prints seconds per frame, the ratio, the fast path's
stage breakdown (project / bin / sort+blend), the numba-blend fallback's time and the peak RSS.
It never passes or fails on times.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from facelift_nb.cameras import orbit
from facelift_nb.render import TILE, project, render, tile_lists
from facelift_nb.testing import shell_scene


def anchor_render(g, cam, bg=(1., 1., 1.), tile: int = TILE) -> torch.Tensor:  # [H, W, 3]
    "The straightforward way: per tile, evaluate every listed Gaussian at every pixel, composite all (no early stop)."
    H, W = cam.hw
    proj = project(g, cam.K[0], cam.w2c[0], cam.hw)
    gx, gy = (W + tile - 1) // tile, (H + tile - 1) // tile
    tid, gid, _ = tile_lists(proj, cam.hw, tile)  # (tile, Gaussian) pairs, vectorised; sorted by tile then depth
    bounds = torch.searchsorted(tid, torch.arange(gx * gy + 1)).tolist()
    bgt = torch.tensor(bg)
    img = torch.empty(gy * tile, gx * tile, 3)
    ys, xs = torch.meshgrid(torch.arange(tile) + 0.5, torch.arange(tile) + 0.5, indexing="ij")
    for t in range(gx * gy):
        ty, tx = divmod(t, gx)
        sel = gid[bounds[t]:bounds[t + 1]]
        px = torch.stack([xs + tx * tile, ys + ty * tile], -1).reshape(-1, 2)
        d = proj.means2d[sel][None] - px[:, None]
        c = proj.conics[sel]
        power = -0.5 * (c[:, 0] * d[..., 0] ** 2 + c[:, 2] * d[..., 1] ** 2) - c[:, 1] * d[..., 0] * d[..., 1]
        alpha = (proj.opacities[sel] * torch.exp(power)).clamp_max(0.99)
        alpha = torch.where((power <= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
        T = torch.cumprod(1 - alpha, 1)
        w = alpha * torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], 1)
        out = w @ proj.colors[sel] + T[:, -1:] * bgt if len(sel) else bgt.expand(len(px), 3)
        img[ty * tile:(ty + 1) * tile, tx * tile:(tx + 1) * tile] = out.reshape(tile, tile, 3)
    return img[:H, :W]


def fast_stages(g, cam):
    "The fast path's stage times (project / bin / sort+blend) from the same call render(..., backend='cpu') makes."
    from facelift_nb.render import render_cpu_view
    t = {}
    render_cpu_view(g, cam.K[0], cam.w2c[0], cam.hw, torch.ones(3), timings=t)
    return t["project"], t["bin"], t["blend"]


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def case(name, n, hw, repeats, anchor_repeats):
    g = shell_scene(n, seed=0)
    cam = orbit([0.], fov_deg=30., hw=hw)
    render(g, cam, backend="cpu")  # load the compiled kernels (cached on disk after the first run)
    fast, anchor = [], []
    for r in range(max(repeats, anchor_repeats)):  # interleaved
        if r < repeats:
            t = time.perf_counter()
            out = render(g, cam, backend="cpu")
            fast.append(time.perf_counter() - t)
        if r < anchor_repeats:
            t = time.perf_counter()
            ref = anchor_render(g, cam)
            anchor.append(time.perf_counter() - t)
    stages = [fast_stages(g, cam) for _ in range(repeats)]
    os.environ["FACELIFT_NB_BLEND"] = "numba"  # the fallback used where no C compiler exists
    render(g, cam, backend="cpu")
    nb = statistics.median(_timed(lambda: render(g, cam, backend="cpu")) for _ in range(repeats))
    os.environ.pop("FACELIFT_NB_BLEND")
    f, a = statistics.median(fast), statistics.median(anchor)
    p, b, bl = (statistics.median(s[i] for s in stages) for i in range(3))
    diff = (out.rgb[0] - ref).abs().max().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"({name}) {n:>9,} Gaussians at {hw[0]}x{hw[1]}: fast {f:7.3f} s/frame, anchor {a:8.3f} s/frame, "
          f"anchor/fast {a / f:6.1f}x | numba-blend fallback {nb:.3f} s ({nb / f:.1f}x) | "
          f"stages project {p:.3f} bin {b:.3f} sort+blend {bl:.3f} s | "
          f"max |fast - anchor| {diff:.1e} | peak RSS so far {rss:,.0f} MiB", flush=True)


def main(quick: bool = False):
    from facelift_nb.render_kernels import kernel_info
    info = kernel_info()
    print(f"render benchmark, {torch.get_num_threads()} torch threads; the fast path uses {info['threads']} threads, "
          f"blend={info['blend']} ({info['compiler']} {' '.join(info['flags'])})")
    case("a", 4096, (256, 256), 5, 3)
    if quick: return
    case("b", 200_000, (512, 512), 3, 1)
    case("c", 1_572_866, (512, 512), 3, 1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="only scene (a)")
    main(p.parse_args().quick)
