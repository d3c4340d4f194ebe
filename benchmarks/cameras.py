"""Benchmark: GS-LRM input rays (`plucker_inputs`) against a straightforward per-view K⁻¹ implementation.

Prints seconds per call for both (interleaved, median of the repeats) and the ratio; no absolute thresholds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from facelift_nb.cameras import Cameras, plucker_inputs
from facelift_nb.layouts import get_layout


def reference_plucker(images: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    "The straightforward way: per view, pixel centres through K⁻¹, rotate, normalise; then the nearest point."
    V, _, H, W = images.shape
    out = []
    for v in range(V):
        ys, xs = torch.meshgrid(torch.arange(H, dtype=images.dtype) + 0.5, torch.arange(W, dtype=images.dtype) + 0.5,
                                indexing="ij")
        pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # [HW, 3]
        d = pix @ torch.linalg.inv(cameras.K[v]).T
        d = d / d.norm(dim=-1, keepdim=True)
        c2w = torch.linalg.inv(cameras.w2c[v])
        d = d @ c2w[:3, :3].T
        d = d / d.norm(dim=-1, keepdim=True)
        o = c2w[:3, 3].expand_as(d)
        nearest = o - (o * d).sum(-1, keepdim=True) * d
        geo = torch.cat([d, nearest], -1).T.reshape(6, H, W)
        out.append(torch.cat([images[v] * 2 - 1, geo], 0))
    return torch.stack(out)


def main(repeats: int = 7, hw: tuple[int, int] = (512, 512)):
    torch.manual_seed(0)
    cams = get_layout("facelift6").cameras(hw=hw)
    imgs = torch.rand(len(cams), 3, *hw)
    fast, ref = [], []
    for _ in range(repeats):  # interleaved so both see the same machine state
        t = time.perf_counter()
        a = plucker_inputs(imgs, cams)
        fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = reference_plucker(imgs, cams)
        ref.append(time.perf_counter() - t)
    err = (a - b).abs().max().item()
    f, r = statistics.median(fast), statistics.median(ref)
    print(f"plucker_inputs, 6 views at {hw[0]}x{hw[1]}, {torch.get_num_threads()} threads, median of {repeats}")
    print(f"  facelift_nb.plucker_inputs : {f * 1e3:8.1f} ms")
    print(f"  reference (per-view K^-1)  : {r * 1e3:8.1f} ms")
    print(f"  ratio reference / library  : {r / f:8.2f}x   (max abs difference {err:.2e})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=7)
    main(p.parse_args().repeats)
