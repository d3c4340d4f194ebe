"""GPU check: everything that needs a GPU, in one command and one table.

On a CUDA machine (`python benchmarks/gpu_check.py`, well under 8 minutes on one GPU) it runs
  1. the `gpu`-marked tests (pytest -m gpu);
  2. gsplat against the CPU renderer: image parity, and frames per second of each at 1,572,866 Gaussians, 512²;
  3. the published-size GS-LRM (random weights, width 1024, 24 layers) on 6 views at 512² under bf16: time, peak memory;
  4. one denoising step of the published-size multi-view UNet in fp16 (CFG batch 12, 64² latents): time, peak memory;
  5. the whole FaceLift pipeline at published sizes with random weights (50 DDIM steps, GS-LRM, 6 renders), end to end;
  6. a 150-frame 512² turntable of the pipeline's Gaussians, rendered where they are (gsplat on CUDA);
  7. `reconstruct_rig_sequence` on a 6-camera RGBA recording of 8 frames at 512² (each view rendered once on the GPU
     and repeated) with the published-size GS-LRM: frames/s at batch 1 and 2, the video stage, PLY size, peak memory.
`--dry-run` runs the same code on the CPU at the tiny test sizes (tests/test_benchmarks.py runs it, so it cannot rot).
Random weights: the numbers are speed and memory, not quality. Exit status 1 when any check fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging

from facelift_nb.cameras import Cameras, orbit
from facelift_nb.layouts import get_layout
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.render import render, render_turntable
from facelift_nb.sequence import reconstruct_rig_sequence
from facelift_nb.synthetic import make_subject, save_rgba
from facelift_nb.testing import shell_scene

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_GAUSSIANS = 2 + 6 * 512 * 512  # what GS-LRM makes from 6 views at 512²


@dataclass(frozen=True)
class Sizes:
    "The sizes a check runs at: published on a GPU, tiny on the CPU (--dry-run)."
    device: str
    image: int  # GS-LRM and render resolution
    n_gaussians: int
    gslrm: dict  # GSLRM config
    mv_dtype: torch.dtype
    gslrm_dtype: torch.dtype
    fast_backend: str  # the renderer compared with the CPU one: gsplat on CUDA, the PyTorch reference on CPU
    steps: int  # DDIM steps of the pipeline run
    turntable: int  # frames
    repeats: int
    sequence: int  # frames of the rig recording


def sizes(dry_run: bool) -> Sizes:
    if dry_run:
        return Sizes("cpu", 32, 2 + 6 * 32 * 32, GSLRM.tiny_config(), torch.float32, torch.float32, "torch", 4, 150, 1,
                     3)
    return Sizes("cuda", 512, PUBLISHED_GAUSSIANS, {}, torch.float16, torch.bfloat16, "gsplat", 50, 150, 5, 8)


@dataclass
class Row:
    check: str
    status: str  # "ok", "FAIL" or "skipped"
    result: str


def _sync(dev: str):
    if dev == "cuda": torch.cuda.synchronize()


def _timed(fn, dev: str, repeats: int, warmup: int = 1) -> float:
    "Median seconds of `fn()` after `warmup` calls."
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _peak(dev: str) -> str:
    if dev != "cuda": return "peak memory n/a on CPU"
    return f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


def _reset_peak(dev: str):
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def check_gpu_tests(s: Sizes) -> Row:
    "The gpu-marked tests (on the CPU they all skip: the dry run checks they are collected and skip cleanly)."
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    last = (r.stdout.strip().splitlines() or ["no output"])[-1]
    return Row("gpu-marked tests", "ok" if r.returncode == 0 else "FAIL", last)


def check_renderer(s: Sizes) -> Row:
    "Parity of the fast backend with the CPU renderer on three views, and frames per second of each."
    g = shell_scene(s.n_gaussians, seed=0, radius=0.5)
    cams = get_layout("facelift6").cameras(hw=(s.image, s.image))[:3]
    ref = render(g, cams, backend="cpu")
    gd, cd = g.to(s.device), cams.to(s.device)
    fast = render(gd, cd, backend=s.fast_backend)
    diff = (fast.rgb.cpu() - ref.rgb).abs().mean().item()
    t_fast = _timed(lambda: render(gd, cd[:1], backend=s.fast_backend), s.device, max(s.repeats, 3))
    t_cpu = _timed(lambda: render(g, cams[:1], backend="cpu"), "cpu", 1, warmup=0)
    ok = diff < 5e-3
    return Row(f"renderer {s.fast_backend} vs cpu", "ok" if ok else "FAIL",
               f"{s.n_gaussians:,} Gaussians {s.image}²: mean |diff| {diff:.1e}; "
               f"{s.fast_backend} {1 / t_fast:.1f} frames/s, cpu {1 / t_cpu:.2f} frames/s")


def _random_gslrm(s: Sizes) -> GSLRM:
    "GS-LRM of the check's size with seeded random weights, in the check's dtype on its device."
    torch.manual_seed(0)
    with torch.device(s.device): return GSLRM(**s.gslrm).to(s.gslrm_dtype).eval()


def _time_gslrm(s: Sizes) -> tuple[float, int, int]:
    "Median seconds of one forward, the Gaussians it makes and the parameter count (the model is freed on return)."
    model = _random_gslrm(s)
    cams = Cameras.stack([get_layout("facelift6").cameras(hw=(s.image, s.image))]).to(s.device)
    x = torch.rand(1, 6, 3, s.image, s.image, device=s.device)
    with torch.no_grad():
        t = _timed(lambda: model(x, cams), s.device, s.repeats)
        n = model(x, cams).gaussians.means.shape[1]
    return t, n, sum(p.numel() for p in model.parameters())


def check_gslrm(s: Sizes) -> Row:
    "One GS-LRM forward on 6 views with random weights, in the check's dtype."
    _reset_peak(s.device)
    t, n, n_params = _time_gslrm(s)
    ok = n == 2 + 6 * (s.image ** 2)
    return Row(f"GS-LRM {n_params / 1e6:.1f} M params, {str(s.gslrm_dtype)[6:]}", "ok" if ok else "FAIL",
               f"6x{s.image}² -> {n:,} Gaussians in {t:.3f} s, {_peak(s.device)}")


def _published_mv(dev: str, dtype: torch.dtype):
    "An MVDiffusion pipeline at the published sizes (SD 2.1 unCLIP UNet, VAE, ViT-H/14 image encoder), random weights."
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from facelift_nb.models.mvdiffusion import MVDiffusionPipeline, install_mv_attention
    layout = get_layout("facelift6")
    torch.manual_seed(0)
    with torch.device(dev):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=8, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
            use_linear_projection=True, upcast_attention=True,
            class_embed_type="projection", projection_class_embeddings_input_dim=2048,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=512)
        enc_config = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                      num_attention_heads=16, patch_size=14, image_size=224, projection_dim=1024,
                                      hidden_act="gelu")
        enc = CLIPVisionModelWithProjection(enc_config)
        norm = StableUnCLIPImageNormalizer(embedding_dim=1024)
    install_mv_attention(unet.eval(), len(layout), "reference")
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    pipe = MVDiffusionPipeline(unet=unet, vae=vae.eval(), image_encoder=enc.eval(),
                               feature_extractor=CLIPImageProcessor(), image_normalizer=norm.eval(),
                               image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
                               scheduler=sched, layout=layout, prompt_embeds=torch.randn(len(layout), 77, 1024) * 0.5)
    return pipe.to(dev, dtype)


def _mv_pipeline(s: Sizes):
    from facelift_nb.models.mvdiffusion import MVDiffusionPipeline
    return MVDiffusionPipeline.tiny() if s.device == "cpu" else _published_mv(s.device, s.mv_dtype)


def check_mv_unet(s: Sizes) -> Row:
    "One CFG denoising step of the multi-view UNet (batch 2V, the published conditioning sizes)."
    pipe = _mv_pipeline(s)
    _reset_peak(s.device)
    u = pipe.unet
    S, V = u.config.sample_size, len(pipe.layout)
    g = torch.Generator(s.device).manual_seed(0)
    x = torch.randn(2 * V, u.config.in_channels, S, S, generator=g, device=s.device, dtype=s.mv_dtype)
    emb = torch.randn(2 * V, 77, u.config.cross_attention_dim, generator=g, device=s.device, dtype=s.mv_dtype)
    cls = torch.randn(2 * V, u.config.projection_class_embeddings_input_dim, generator=g, device=s.device,
                      dtype=s.mv_dtype)
    with torch.no_grad():
        step = lambda: u(x, torch.tensor(500, device=s.device), encoder_hidden_states=emb, class_labels=cls).sample
        t = _timed(step, s.device, s.repeats)
        ok = bool(torch.isfinite(step()).all())
    n_params = sum(p.numel() for p in u.parameters())
    return Row(f"MV UNet {n_params / 1e6:.0f} M params, {str(s.mv_dtype)[6:]}", "ok" if ok else "FAIL",
               f"one step, batch {2 * V} at {S}² latents: {t:.3f} s, {_peak(s.device)}")


def check_pipeline(s: Sizes) -> tuple[Row, object]:
    "The whole pipeline end to end (random weights), on the check's device; returns the Gaussians for the turntable."
    from facelift_nb.cli import example_image
    from facelift_nb.pipeline import FaceLiftPipeline
    mv = _mv_pipeline(s)
    gs = _random_gslrm(s)
    random_init = {"path": "random init", "files": {}}
    pipe = FaceLiftPipeline(mv, gs, {"mvdiffusion": random_init, "gslrm": dict(random_init)})
    _reset_peak(s.device)
    _sync(s.device)
    t = time.perf_counter()
    out = pipe(example_image("head"), num_inference_steps=s.steps, turntable_frames=0, progress=False,
               render_size=s.image)
    _sync(s.device)
    t = time.perf_counter() - t
    tm = out.manifest["timings_s"]
    ok = out.renders.rgb.shape == (6, s.image, s.image, 3) and bool(torch.isfinite(out.renders.rgb).all())
    row = Row("pipeline end to end", "ok" if ok else "FAIL",
              f"{s.steps} steps: {t:.1f} s (views {tm['mvdiffusion']:.1f} s, GS-LRM {tm['gslrm']:.2f} s, "
              f"renders {tm['render']:.2f} s), {len(out.gaussians):,} Gaussians on {out.gaussians.means.device.type}, "
              f"{_peak(s.device)}")
    return row, out.gaussians


def check_turntable(s: Sizes, gaussians) -> Row:
    "A turntable of the pipeline's Gaussians, rendered where they are."
    dev = gaussians.means.device.type
    _sync(dev)
    t = time.perf_counter()
    tt = render_turntable(gaussians, n_frames=s.turntable, hw=(s.image, s.image), progress=False)
    _sync(dev)
    t = time.perf_counter() - t
    ok = tt.rgb.shape == (s.turntable, s.image, s.image, 3) and (dev == s.device)
    return Row(f"turntable {s.turntable} frames", "ok" if ok else "FAIL",
               f"{len(gaussians):,} Gaussians at {s.image}² on {dev}: {t:.2f} s ({s.turntable / t:.0f} frames/s)")


def _rig_recording(s: Sizes, folder: Path) -> Path:
    "A 6-camera RGBA recording at `s.image`² of one still subject: each view rendered once, saved for every frame."
    S = s.image
    cams = orbit(get_layout("facelift6").azimuths_deg, 0., 2.7, 50., (S, S))
    out = render(make_subject(0, "head").to(s.device), cams.to(s.device), bg=(0., 0., 0.))
    a = out.alpha[..., None].cpu()  # [V, S, S, 1]
    rgb = torch.where(a > 1e-4, out.rgb.cpu() / a.clamp_min(1e-4), torch.zeros_like(out.rgb.cpu()))  # straight alpha
    names = [f"cam_{v:02d}" for v in range(len(cams))]
    for v, name in enumerate(names):
        first = save_rgba(torch.cat([rgb[v], a[v]], -1), folder / name / "frame_00000.png")
        for i in range(1, s.sequence): shutil.copyfile(first, folder / name / f"frame_{i:05d}.png")
        (folder / name / "frames.json").write_text(json.dumps({"fps": 12}))
    return dataclasses.replace(cams, meta=[{"file_path": n} for n in names]).to_facelift_json(
        folder / "opencv_cameras.json")


def _rig_run(gslrm: GSLRM, cams_file: Path, out: Path, s: Sizes, **kw):
    "`reconstruct_rig_sequence` on the recording (already in GS-LRM's world), raw Gaussians, timed."
    _sync(s.device)
    t = time.perf_counter()
    res = reconstruct_rig_sequence(gslrm, cams_file, out, layout="facelift6", normalize=False, filters=None,
                                   render_size=s.image, progress=False, **kw)
    _sync(s.device)
    return time.perf_counter() - t, res


def check_sequence(s: Sizes) -> Row:
    "A rig recording through `reconstruct_rig_sequence`: GS-LRM batches of 1 and 2, then the videos of the run."
    N, V = s.sequence, 6
    with tempfile.TemporaryDirectory(prefix="gpu_check_sequence_") as d:
        tmp = Path(d)
        cams_file = _rig_recording(s, tmp / "rig")
        gslrm = _random_gslrm(s)
        for b in (1, 2):
            _rig_run(gslrm, cams_file, tmp / "warm", s, end=b, batch=b, videos=False)
            shutil.rmtree(tmp / "warm")  # a published-size frame is a 358 MiB PLY: keep the disk to one run
        _reset_peak(s.device)
        t1, r1 = _rig_run(gslrm, cams_file, tmp / "b1", s, batch=1, videos=False)
        counts = {r1.store.read_record(i)["num_gaussians"] for i in r1.frames}
        shutil.rmtree(tmp / "b1")
        t2, r2 = _rig_run(gslrm, cams_file, tmp / "b2", s, batch=2, videos=False)
        # the same run again with videos: every frame is kept (resumed), only index.json and the videos are made
        t_vid, rv = _rig_run(gslrm, cams_file, tmp / "b2", s, batch=2, videos=True)
        peak = _peak(s.device)
        counts |= {r2.store.read_record(i)["num_gaussians"] for i in r2.frames}
        ply_mib = r2.store.ply_path(r2.frames[0]).stat().st_size / 2**20
        vids = rv.videos
        ok = (len(r1) == len(r2) == N and r1.computed == r2.computed == tuple(range(N)) and rv.computed == ()
              and counts == {s.n_gaussians} and vids is not None and vids.fixed.is_file() and vids.orbit.is_file()
              and vids.side_by_side is not None and vids.side_by_side.is_file())
    each = (f"{s.n_gaussians:,} Gaussians each" if counts == {s.n_gaussians} else
            f"Gaussians per frame {sorted(counts)}, not {s.n_gaussians:,}")
    return Row(f"sequence {V} cameras x {N} frames", "ok" if ok else "FAIL",
               f"{V}x{s.image}² RGBA -> {len(r2)} frames, {each}: batch 1 {N / t1:.2f} frames/s, "
               f"batch 2 {N / t2:.2f} frames/s ({t1 / t2:.2f}x); videos 3x{s.image}² {t_vid:.1f} s "
               f"({N / t_vid:.1f} frames/s); PLY {ply_mib:.1f} MiB/frame, {peak}")


def run_checks(dry_run: bool = False) -> list[Row]:
    "Every check in turn; a failing check is reported in its row and the others still run."
    s = sizes(dry_run)
    # random-weight models cast with .to(dtype): diffusers' advice does not apply
    diffusers_logging.set_verbosity_error()
    rows, gaussians = [], None
    def attempt(name, fn, *args):
        try: return fn(*args)
        except Exception as e:  # a check that crashes is a FAIL row with its error, not the end of the run
            traceback.print_exc()
            return Row(name, "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
    rows.append(attempt("gpu-marked tests", check_gpu_tests, s))
    for name, fn in (("renderer", check_renderer), ("GS-LRM", check_gslrm), ("MV UNet", check_mv_unet)):
        rows.append(attempt(name, fn, s))
    res = attempt("pipeline end to end", check_pipeline, s)
    if isinstance(res, Row): rows += [res, Row("turntable", "skipped", "the pipeline check failed")]
    else:
        row, gaussians = res
        rows += [row, attempt("turntable", check_turntable, s, gaussians)]
    del gaussians, res  # the pipeline's Gaussians leave the GPU before the sequence check
    rows.append(attempt("sequence", check_sequence, s))
    return rows


def table(rows: list[Row], title: str) -> str:
    w = max(len(r.check) for r in rows)
    lines = [title, f"| {'check':<{w}} | status | result |", f"|{'-' * (w + 2)}|--------|--------|"]
    lines += [f"| {r.check:<{w}} | {r.status:<6} | {r.result} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the same checks at tiny sizes on the CPU")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or pass --dry-run for the tiny CPU version.",
              file=sys.stderr)
        return 2
    where = "CPU, tiny sizes (--dry-run)" if args.dry_run else torch.cuda.get_device_name()
    rows = run_checks(args.dry_run)
    print(table(rows, f"facelift_nb GPU check on {where}, torch {torch.__version__}"), flush=True)
    if args.json: args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0 if all(r.status != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
