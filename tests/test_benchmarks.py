"""Correctness of the benchmarks' reference implementations (timings are never asserted)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cameras as bench_cameras  # noqa: E402
import gpu_check as bench_gpu  # noqa: E402
import gslrm as bench_gslrm  # noqa: E402
import mvdiffusion as bench_mvdiffusion  # noqa: E402
import render as bench_render  # noqa: E402

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
                  "turntable 150 frames"):
        assert check in out, out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows), rows


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
