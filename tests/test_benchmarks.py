"""Correctness of the benchmarks' reference implementations (timings are never asserted)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cameras as bench_cameras  # noqa: E402
import gpu_check as bench_gpu  # noqa: E402
import gslrm as bench_gslrm  # noqa: E402
import mesh as bench_mesh  # noqa: E402
import metrics as bench_metrics  # noqa: E402
import mvdiffusion as bench_mvdiffusion  # noqa: E402
import render as bench_render  # noqa: E402
import sequence as bench_sequence  # noqa: E402

from facelift_nb.cameras import plucker_inputs  # noqa: E402
from facelift_nb.layouts import get_layout  # noqa: E402


def test_reference_plucker_agrees_with_library():
    cams = get_layout("facelift6").cameras(hw=(16, 24))
    imgs = torch.rand(6, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bench_cameras.reference_plucker(imgs, cams), plucker_inputs(imgs, cams),
                               atol=2e-6, rtol=0)


def test_benchmark_runs(capsys):
    bench_cameras.main(repeats=1, hw=(16, 16))
    assert "ratio reference / library" in capsys.readouterr().out


def test_render_anchor_agrees_with_reference():
    "The anchor composites every Gaussian (no early stop): it differs from the reference by at most the stopped T."
    from facelift_nb.cameras import orbit
    from facelift_nb.render import render
    from facelift_nb.testing import shell_scene
    g, cam = shell_scene(4096, seed=0), orbit([0.], fov_deg=30., hw=(64, 64))
    ref = render(g, cam, backend="torch")
    anchor = bench_render.anchor_render(g, cam)
    assert (anchor - ref.rgb[0]).abs().max() < 0.0101
    assert (anchor - ref.rgb[0]).abs().mean() < 1e-4
    assert (render(g, cam, backend="cpu").rgb - ref.rgb).abs().max() < 1e-4


def test_render_benchmark_quick(capsys):
    bench_render.main(quick=True)
    assert "anchor/fast" in capsys.readouterr().out


def test_gslrm_benchmark_variants_agree(capsys):
    "The eager reference attention and SDPA give the same Gaussians (the benchmark compares their speed)."
    (ms, x, c), (me, _, _) = bench_gslrm.build("tiny", "sdpa"), bench_gslrm.build("tiny", "eager")
    me.load_state_dict(ms.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(me(x, c).gaussians.means, ms(x, c).gaussians.means, atol=1e-5, rtol=1e-5)
    bench_gslrm.main(repeats=1, configs=("tiny",), memory=False)
    assert "eager/sdpa" in capsys.readouterr().out


@pytest.mark.gpu
def test_gslrm_gpu_benchmark_runs(capsys):
    bench_gslrm.main_gpu(repeats=1)
    assert "published: sdpa" in capsys.readouterr().out


def test_mvdiffusion_benchmark_variants(capsys):
    # same weights, three processors: the multi-view ones change the result, the default attends per view
    pipes = {a: bench_mvdiffusion.tiny_pipe(a) for a in bench_mvdiffusion.ATTENTION}
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    outs = {a: p(img, num_inference_steps=2, generator=0).images for a, p in pipes.items()}
    assert all(o.shape == (6, 16, 16, 3) for o in outs.values())
    assert not torch.allclose(outs["reference"], outs["default"])
    assert not torch.allclose(outs["dense"], outs["reference"])
    assert bench_mvdiffusion.mid_unet_config()["block_out_channels"] == (128, 256, 512)
    bench_mvdiffusion.main(repeats=1, cases=("tiny",), memory=False)
    assert "reference" in capsys.readouterr().out


def test_gpu_check_dry_run(capsys, tmp_path):
    "The GPU check's code at tiny sizes on the CPU: one table, every check ok, the rows saved as JSON."
    assert bench_gpu.main(["--dry-run", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    for check in ("gpu-marked tests", "renderer torch vs cpu", "GS-LRM", "MV UNet", "pipeline end to end",
                  "turntable 150 frames", "sequence 6 cameras x 3 frames"):
        assert check in out, out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows), rows
    assert "3 frames, 6,146 Gaussians each" in rows[-1]["result"], rows[-1]  # 2 + 6·32² raw Gaussians per frame


def test_sequence_benchmark_quick(capsys):
    "The sequence benchmark's --quick run prints its tables: the rig's batches and both stage breakdowns."
    bench_sequence.main(["--quick"])
    out = capsys.readouterr().out
    assert "| GS-LRM batch | frames/s (median of 1) | vs batch 1 |" in out and "| 4 |" in out, out
    assert out.count("| stage | share | ms/frame |") == 2 and out.count("| all stages | 100% |") == 2, out
    for stage in ("GS-LRM (batch 4)", "videos (3 × 256², stability)", "multi-view stage (4 steps)", "GS-LRM |"):
        assert stage in out, out
    assert "end to end (no videos):" in out, out


def test_gpu_check_without_cuda_says_so(capsys):
    if torch.cuda.is_available(): pytest.skip("CUDA is present")
    assert bench_gpu.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err


def test_gpu_check_builds_the_published_sizes():
    "The GPU check's random-weight MVDiffusion has the published component sizes (built on the meta device: no memory)."
    p = bench_gpu._published_mv("meta", torch.float16)
    count = lambda m: sum(x.numel() for x in m.parameters())
    # SD 2.1 UNet + 4 condition-latent input channels + the 2048 -> 1280 class projection
    assert count(p.unet) == 870_184_644
    assert count(p.image_encoder) == 632_076_800  # CLIP ViT-H/14 vision tower with its 1024 projection
    assert p.resolution == 512 and p.unet.config.in_channels == 8 and p.prompt_embeds.shape == (6, 77, 1024)
    from facelift_nb.models.gslrm import GSLRM
    with torch.device("meta"): assert count(GSLRM()) == 303_565_824


def test_metrics_benchmark_references_agree(capsys):
    "SSIM equals scikit-image's; LPIPS equals the lpips package's where its wheel is present (same random backbone)."
    pytest.importorskip("skimage", reason="scikit-image is in the `dev` extra")
    diffs = bench_metrics.check(size=32, batch=2)
    assert diffs["ssim"] < 1e-5
    assert all(v < 1e-6 for k, v in diffs.items() if k.startswith("lpips"))
    bench_metrics.main(repeats=1, size=32, batch=2)
    out = capsys.readouterr().out
    assert "ratio skimage/facelift_nb" in out and "LPIPS-vgg" in out



def test_mesh_reference_fusion_agrees_with_library():
    "The per-view NumPy loop and the vectorised fusion give the same TSDF (float32 against float64 rounding)."
    pytest.importorskip("skimage")
    from facelift_nb.mesh import fuse_tsdf, mesh_box, sphere_views
    from facelift_nb.render import render
    g = bench_mesh.gslrm_sized_subject(3000, scale=0.03)
    assert len(g) == 3000 and abs(float(g.scales.max()) - 0.03) < 1e-7
    lo, hi = mesh_box(g)
    cams = sphere_views(6, lo, hi, (32, 32))
    out = render(g, cams, bg=(0., 0., 0.), backend="cpu")
    fast, size = fuse_tsdf(out.depth, out.alpha, cams, lo, hi, 24)
    ref, ref_size = bench_mesh.reference_fuse(out.depth, out.alpha, cams, lo, hi, 24)
    assert fast.shape == ref.shape and abs(size - ref_size) < 1e-12
    # the library computes only the band near the surface (elsewhere ±1): same signs everywhere, same values in the band
    # (a voxel on a pixel border may round into the neighbouring pixel in float32)
    band = np.abs(fast) < 1
    assert 0.05 < band.mean() < 0.9 and (np.sign(fast) == np.sign(ref)).mean() > 0.999
    assert (np.abs(fast - ref)[band] < 1e-4).mean() > 0.999
