"""Benchmark: MVDiffusion denoising steps on CPU, multi-view attention ("reference", "dense") against diffusers'
default attention processor (SDPA, each view attending only to itself) on the same UNet weights.

Cases: the tiny test pipeline (6 views, 8² latents; a whole pipeline step: CFG batch of 12, scheduler
step; the fixed cost of encoding and decoding is removed by differencing 1 and 1+k steps), and a mid-size UNet
(block channels 128/256/512, 6 views, 32² latents, CFG batch of 12; one UNet forward = one step).
Times are interleaved in one process (median of repeats); the peak memory of one step is measured in a fresh
subprocess per (case, attention) as the growth of the peak RSS. Ratios only, no pass/fail.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from facelift_nb.models.mvdiffusion import MVDiffusionPipeline, install_mv_attention

ATTENTION = ("default", "reference", "dense")
V = 6


def mid_unet_config() -> dict:
    "A mid-size MV UNet: block channels 128/256/512, head dim 64, the published conditioning sizes (1024, 2048)."
    return dict(sample_size=32, in_channels=8, out_channels=4, block_out_channels=(128, 256, 512), layers_per_block=2,
                attention_head_dim=(2, 4, 8), cross_attention_dim=1024, class_embed_type="projection",
                projection_class_embeddings_input_dim=2048, use_linear_projection=True,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def set_attention(unet: UNet2DConditionModel, attention: str) -> UNet2DConditionModel:
    if attention == "default":
        unet.set_attn_processor(AttnProcessor2_0())
        unet.mv_num_views, unet.mv_mode = V, "none"
    else: install_mv_attention(unet, V, attention)
    return unet


def mid_step(attention: str, seed: int = 0):
    "A callable doing one CFG denoising step of the mid UNet (batch 2V), and the UNet."
    torch.manual_seed(seed)
    unet = set_attention(UNet2DConditionModel(**mid_unet_config()).eval(), attention)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * V, 8, 32, 32, generator=g)
    emb = torch.randn(2 * V, 77, 1024, generator=g)
    cls = torch.randn(2 * V, 2048, generator=g)
    t = torch.tensor(500)
    return (lambda: unet(x, t, encoder_hidden_states=emb, class_labels=cls).sample), unet


def tiny_pipe(attention: str):
    pipe = MVDiffusionPipeline.tiny()
    pipe.set_progress_bar_config(disable=True)
    if attention == "default":
        set_attention(pipe.unet, "default")
        pipe.unet.mv_num_views = V
    else: install_mv_attention(pipe.unet, V, attention)
    return pipe


def tiny_step_seconds(pipe, image, k: int = 10) -> float:
    "Seconds per denoising step of the whole tiny pipeline: (t(1 + k steps) - t(1 step)) / k."
    t = time.perf_counter()
    pipe(image, num_inference_steps=1, generator=0)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    pipe(image, num_inference_steps=1 + k, generator=0)
    tk = time.perf_counter() - t
    return max(tk - t1, 1e-9) / k


def peak_mib(case: str, attention: str) -> float:
    "Peak-RSS growth of one step, measured in a fresh process."
    here = str(__file__.rsplit('/', 1)[0])
    body = ("f, _ = b.mid_step(a)\n" if case == "mid" else
            "p = b.tiny_pipe(a); import torch; img = torch.rand(3, 16, 16)\n"
            "f = lambda: p(img, num_inference_steps=1, generator=0)\n")
    code = (f"import resource, sys, torch; sys.path.insert(0, {here!r}); import mvdiffusion as b; a = {attention!r}\n"
            f"{body}"
            "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "with torch.no_grad(): f()\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main(repeats: int = 5, cases=("tiny", "mid"), memory: bool = True):
    print(f"MVDiffusion denoising step on CPU, {torch.get_num_threads()} threads, {V} views, CFG batch {2 * V}, "
          f"median of {repeats}")
    mems = {(c, a): peak_mib(c, a) for c in cases for a in ATTENTION} if memory else {}
    for case in cases:
        times = {a: [] for a in ATTENTION}
        if case == "tiny":
            pipes = {a: tiny_pipe(a) for a in ATTENTION}
            img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
            for a in ATTENTION: tiny_step_seconds(pipes[a], img, 1)  # warm-up
            for _ in range(repeats):  # interleaved
                for a in ATTENTION: times[a].append(tiny_step_seconds(pipes[a], img))
        else:
            steps = {a: mid_step(a)[0] for a in ATTENTION}
            with torch.no_grad():
                for a in ATTENTION: steps[a]()  # warm-up
                for _ in range(repeats):
                    for a in ATTENTION:
                        t = time.perf_counter()
                        steps[a]()
                        times[a].append(time.perf_counter() - t)
        med = {a: statistics.median(times[a]) for a in ATTENTION}
        parts = [f"{a} {med[a] * 1e3:8.1f} ms ({med[a] / med['default']:.2f}x default)"
                 + (f", {mems[case, a]:.0f} MiB" if memory else "") for a in ATTENTION]
        print(f"  {case:>4}: " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    main(p.parse_args().repeats)
