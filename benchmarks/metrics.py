"""Benchmark: SSIM and LPIPS throughput (images/s) against scikit-image's SSIM and the `lpips` package.

Both sides run in the same process on the same images, interleaved; the figures are the median of the repeats and the
ratios are what to read. No absolute thresholds. LPIPS uses seeded random backbone weights on both sides (throughput
does not depend on the weights; torchvision's ImageNet files are not needed).

The `lpips` package is imported from its wheel, never installed: put `lpips-0.1.4-py3-none-any.whl`
(`pip download lpips==0.1.4 --no-deps -d .whl`) in the repository's `.whl/` folder or name it in `$LPIPS_WHEEL`. It
imports torchvision, which is given a stand-in module whose `vgg16`/`alexnet` return facelift_nb's backbones.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

from facelift_nb.metrics import LPIPS, lpips, lpips_backbone, ssim

WHEEL_DIR = Path(__file__).resolve().parents[1] / ".whl"


def find_lpips_wheel() -> Path | None:
    "The lpips wheel named by `$LPIPS_WHEEL` (a file or a folder), else one in the repository's `.whl/`, else None."
    place = Path(os.environ.get("LPIPS_WHEEL", WHEEL_DIR))
    found = [place] if place.is_file() else sorted(place.glob("lpips-*.whl")) if place.is_dir() else []
    return found[-1] if found else None


def lpips_package(state_dicts: dict[str, dict], wheel: Path | None = None) -> types.ModuleType | None:
    "The `lpips` package from its wheel, its torchvision a stand-in whose models carry `state_dicts`; None if absent."
    wheel = wheel or find_lpips_wheel()
    if wheel is None:
        return None
    root = tempfile.mkdtemp(prefix="lpips_wheel_")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)

    def model(net):
        def build(pretrained=True, **kwargs):  # torchvision's signature; the weights are always `state_dicts[net]`
            features = lpips_backbone(net)
            features.load_state_dict(state_dicts[net])
            return types.SimpleNamespace(features=features)
        return build

    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    models.vgg16, models.alexnet, tv.models = model("vgg"), model("alex"), models
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.models")}
    _forget_lpips()
    sys.modules.update({"torchvision": tv, "torchvision.models": models})
    sys.path.insert(0, root)
    try:
        import lpips as package
    finally:
        sys.path.remove(root)
        _forget_lpips()  # each call imports afresh, bound to its own `state_dicts`
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v
    if not str(Path(package.__file__)).startswith(root):
        raise RuntimeError(f"imported lpips from {package.__file__}, not from the wheel {wheel}")
    return package


def _forget_lpips():
    for k in [k for k in sys.modules if k == "lpips" or k.startswith("lpips.")]:
        del sys.modules[k]


def random_backbones(seed: int = 0) -> dict[str, dict]:
    "Seeded random weights of both LPIPS backbones (torchvision's layout)."
    torch.manual_seed(seed)
    return {net: lpips_backbone(net).state_dict() for net in ("vgg", "alex")}


def skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    "scikit-image's SSIM of each `[N, 3, H, W]` pair, with the settings facelift_nb matches (float64)."
    from skimage.metrics import structural_similarity
    p, t = pred.double().numpy(), target.double().numpy()
    return np.array([structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=1.0, channel_axis=0) for a, b in zip(p, t)])


def check(size: int = 32, batch: int = 2) -> dict[str, float]:
    "Max |difference| of facelift_nb against the references on seeded images (what tests/test_benchmarks.py checks)."
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(batch, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)
    out = {"ssim": float(np.abs(ssim(pred, target).double().numpy() - skimage_ssim(pred, target)).max())}
    sds = random_backbones()
    package = lpips_package(sds)
    for net in ("vgg", "alex") if package else ():
        ref = package.LPIPS(net=net, verbose=False)(pred, target, normalize=True).flatten()
        mine = lpips(pred, target, model=LPIPS(net, backbone_state_dict=sds[net]))
        out[f"lpips_{net}"] = (mine - ref).abs().max().item()
    return out


def _median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    "Median seconds of each callable, the callables interleaved within each repeat (after one warm-up call each)."
    times = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ssim_variants(pred: torch.Tensor, target: torch.Tensor, repeats: int) -> dict[str, float]:
    "Seconds of facelift_nb's SSIM: the compiled kernel on all threads and on one, and the PyTorch twin."
    import numba

    def one_thread():
        n = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            ssim(pred, target, backend="cpu")
        finally:
            numba.set_num_threads(n)
    return _median_seconds({"kernel": lambda: ssim(pred, target, backend="cpu"), "kernel, 1 thread": one_thread,
                            "torch twin": lambda: ssim(pred, target, backend="torch")}, repeats)


def main(repeats: int = 3, size: int = 512, batch: int = 16, lpips_batch: int | None = None):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(batch, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads;"
          f" {batch} images of {size}², repeats {repeats}")
    t = _median_seconds({"facelift_nb": lambda: ssim(pred, target), "skimage": lambda: skimage_ssim(pred, target)},
                        repeats)
    err = np.abs(ssim(pred, target).double().numpy() - skimage_ssim(pred, target)).max()
    print(f"SSIM   facelift_nb {batch / t['facelift_nb']:8.1f} img/s   skimage {batch / t['skimage']:8.1f} img/s   "
          f"ratio skimage/facelift_nb {t['skimage'] / t['facelift_nb']:.1f}x   max |diff| {err:.1e}")
    v = ssim_variants(pred, target, repeats)
    print("SSIM   facelift_nb variants: " + ", ".join(f"{k} {batch / t:.1f} img/s" for k, t in v.items()))
    print("SSIM   limit: the kernel is compute-bound (2 passes × 11 taps × 5 float64 sums per pixel, no SIMD across "
          "the 5 sums); it scales with cores, skimage (scipy, float64, one thread) does not")
    nb = lpips_batch or batch
    lp, lt = pred[:nb], target[:nb]
    sds = random_backbones()
    package = lpips_package(sds)
    for net in ("vgg", "alex"):
        mine = LPIPS(net, backbone_state_dict=sds[net])
        fns = {"facelift_nb": lambda: lpips(lp, lt, model=mine)}
        if package:
            ref = package.LPIPS(net=net, verbose=False)
            fns["lpips"] = lambda: ref(lp, lt, normalize=True)
        t = _median_seconds(fns, repeats)
        line = f"LPIPS-{net:4s} facelift_nb {nb / t['facelift_nb']:6.2f} img/s ({nb} images of {size}²)"
        if package:
            with torch.no_grad():
                err = (lpips(lp, lt, model=mine) - ref(lp, lt, normalize=True).flatten()).abs().max().item()
            line += (f"   lpips package {nb / t['lpips']:6.2f} img/s   ratio lpips/facelift_nb "
                     f"{t['lpips'] / t['facelift_nb']:.2f}x   max |diff| {err:.1e}")
        else:
            line += "   (lpips wheel not found: see this script's docstring)"
        print(line)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lpips-batch", type=int, default=None, help="LPIPS images (default: --batch)")
    a = ap.parse_args()
    main(a.repeats, a.size, a.batch, a.lpips_batch)
