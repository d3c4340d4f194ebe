"""Benchmark: GS-LRM forward on CPU, SDPA attention against an eager matmul-softmax implementation.

Configs: the tiny test model (6 views at 32²) and a mid model (width 256, 4 layers, 6 views at 256²).
Times are interleaved in one process (median of repeats); peak memory is measured in a fresh subprocess
per (config, attention) as the growth of the peak RSS during one forward. Ratios only, no pass/fail.
Where CUDA is present it also times the full published config (width 1024, 24 layers) at 6x512² under
bf16 autocast, SDPA against eager, with the peak GPU memory.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from facelift_nb.cameras import Cameras
from facelift_nb.layouts import get_layout
from facelift_nb.models.gslrm import GSLRM

CONFIGS = {"tiny": (GSLRM.tiny_config(), 32),
           "mid": (dict(image_size=256, patch_size=8, width=256, head_dim=64, num_layers=4), 256)}


def build(name: str, attention: str):
    cfg, size = CONFIGS[name]
    torch.manual_seed(0)
    model = GSLRM(**cfg, attention=attention).eval()
    cams = Cameras.stack([get_layout("facelift6").cameras(hw=(size, size))])
    return model, torch.rand(1, 6, 3, size, size), cams


def peak_mib(name: str, attention: str) -> float:
    "Peak-RSS growth of one forward, measured in a fresh process."
    code = (f"import resource, torch, sys; sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r}); import gslrm as b; "
            f"m, x, c = b.build({name!r}, {attention!r}); r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "with torch.no_grad(): m(x, c)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main(repeats: int = 5, configs=("tiny", "mid"), memory: bool = True):
    print(f"GS-LRM forward on CPU, {torch.get_num_threads()} threads, median of {repeats}")
    # memory first: a child's peak RSS starts at the parent's size at fork time, so measure while this process is small
    mems = {(n, a): peak_mib(n, a) for n in configs for a in ("sdpa", "eager")} if memory else {}
    for name in configs:
        (ms, x, c), (me, _, _) = build(name, "sdpa"), build(name, "eager")
        me.load_state_dict(ms.state_dict())
        ts, te = [], []
        with torch.no_grad():
            ms(x, c)  # warm-up
            me(x, c)
            for _ in range(repeats):  # interleaved
                t = time.perf_counter()
                a = ms(x, c).gaussians.means
                ts.append(time.perf_counter() - t)
                t = time.perf_counter()
                b = me(x, c).gaussians.means
                te.append(time.perf_counter() - t)
        s, e = statistics.median(ts), statistics.median(te)
        mem = (f" | peak RSS growth sdpa {mems[name, 'sdpa']:.0f} MiB, eager {mems[name, 'eager']:.0f} MiB"
               if memory else "")
        print(f"  {name:>4}: sdpa {s * 1e3:8.1f} ms, eager {e * 1e3:8.1f} ms, eager/sdpa {e / s:5.2f}x, "
              f"max |diff| {(a - b).abs().max().item():.1e}{mem}", flush=True)


def main_gpu(repeats: int = 10):
    "The published config at 6x512² on CUDA under bf16 autocast: SDPA against eager, seconds and peak memory."
    if not torch.cuda.is_available():
        print("GPU: no CUDA device here; skipped")
        return
    dev = torch.device("cuda")
    print(f"GS-LRM forward on {torch.cuda.get_device_name(dev)}, published config, 6x512², bf16 autocast, "
          f"median of {repeats}")
    cams = Cameras.stack([get_layout("facelift6").cameras(hw=(512, 512))]).to(dev)
    x = torch.rand(1, 6, 3, 512, 512, device=dev)
    res = {}
    for attention in ("sdpa", "eager"):
        torch.manual_seed(0)
        m = GSLRM(attention=attention).to(dev).eval()
        torch.cuda.reset_peak_memory_stats(dev)
        ts = []
        with torch.no_grad():
            for r in range(repeats + 2):
                torch.cuda.synchronize()
                t = time.perf_counter()
                m(x, cams, autocast_dtype=torch.bfloat16)
                torch.cuda.synchronize()
                if r >= 2: ts.append(time.perf_counter() - t)  # two warm-ups
        res[attention] = (statistics.median(ts), torch.cuda.max_memory_allocated(dev) / 2**30)
        del m
        torch.cuda.empty_cache()
    (s, ms), (e, me) = res["sdpa"], res["eager"]
    print(f"  published: sdpa {s:.3f} s ({ms:.1f} GiB peak), eager {e:.3f} s ({me:.1f} GiB peak), "
          f"eager/sdpa {e / s:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    main(args.repeats)
    main_gpu()
