"""Metrics against their references: SSIM and PSNR against scikit-image, LPIPS against the `lpips` package (same random
backbone weights), the CPU kernel against its PyTorch twin, masks, baselines and errors."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import metrics as bench_metrics  # noqa: E402

from facelift_nb.cli import example_image  # noqa: E402
from facelift_nb.metrics import (  # noqa: E402
    LPIPS,
    background_baseline,
    find_backbone_weights,
    lpips,
    lpips_backbone,
    mask_iou,
    psnr,
    ssim,
    ssim_map,
)

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is in the `dev` extra")


def _images(n=3, hw=(40, 52), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *hw, generator=g), torch.rand(n, 3, *hw, generator=g)


def _head(size=128):
    "The shipped example head composited on white, [3, H, W], and a damaged copy (blurred, noisy, shifted colour)."
    rgba = np.asarray(Image.open(example_image("head")).convert("RGBA").resize((size, size)), dtype=np.float32) / 255
    rgb = torch.from_numpy(rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]).permute(2, 0, 1)
    blur = torch.nn.functional.avg_pool2d(rgb[None], 3, 1, 1, count_include_pad=False)[0]
    noise = 0.03 * torch.randn(rgb.shape, generator=torch.Generator().manual_seed(1))
    damaged = (blur + noise + torch.tensor([0.02, 0., -0.02])[:, None, None]).clamp(0, 1)
    return rgb, damaged, torch.from_numpy(rgba[..., 3])


def _skimage_ssim(p, t, full=False):
    return skimage_metrics.structural_similarity(p.double().numpy(), t.double().numpy(), gaussian_weights=True,
                                                 sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                                 channel_axis=0, full=full)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_ssim_matches_skimage_on_random_and_real_images(backend):
    p, t = _images()
    ours = ssim(p, t, backend=backend)
    assert np.abs(ours.double().numpy() - [_skimage_ssim(a, b) for a, b in zip(p, t)]).max() < 1e-5
    head, damaged, _ = _head()
    for a, b in ((damaged, head), (head, head.flip(-1)), (head * 0.9, head)):
        assert abs(ssim(a[None], b[None], backend=backend).item() - _skimage_ssim(a, b)) < 1e-5


def test_ssim_map_and_mask_match_skimage_full_map():
    head, damaged, alpha = _head(96)
    _, full = _skimage_ssim(damaged, head, full=True)
    r = 5
    sk = torch.from_numpy(full[:, r:-r, r:-r])  # skimage's map, cropped as its mean is
    torch.testing.assert_close(ssim_map(damaged[None], head[None])[0].double(), sk, atol=1e-5, rtol=0)
    m = alpha[r:-r, r:-r].double()
    want = (sk * m).sum() / (3 * m.sum())
    assert abs(ssim(damaged[None], head[None], mask=alpha[None]).item() - want.item()) < 1e-5


def test_ssim_kernel_equals_torch_twin_and_keeps_gradients():
    p, t = _images(2, (23, 31), seed=3)
    torch.testing.assert_close(ssim_map(p, t, backend="cpu"), ssim_map(p, t, backend="torch"), atol=1e-6, rtol=0)
    q = p.clone().requires_grad_()
    ssim(q, t).sum().backward()  # "auto" takes the differentiable path
    assert q.grad is not None and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="backend='cpu'"):
        ssim(p.clone().requires_grad_(), t, backend="cpu")


def test_psnr_matches_skimage_and_old_formula_bit_for_bit():
    p, t = _images()
    for a, b, ours in zip(p, t, psnr(p, t)):
        assert abs(ours.item() - skimage_metrics.peak_signal_noise_ratio(b.numpy(), a.numpy(), data_range=1)) < 1e-4
    old = -10 * torch.log10((p - t).square().flatten(1).mean(1).clamp_min(1e-10))  # what training logs
    assert torch.equal(psnr(p, t), old)


def test_masked_psnr_is_the_mse_over_masked_pixels():
    p, t = _images(2, (8, 8))
    m = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(4)) > 0.5
    for i in range(2):
        mse = (p[i] - t[i]).square()[:, m[i]].mean()
        assert abs(psnr(p, t, mask=m)[i].item() + 10 * torch.log10(mse).item()) < 1e-4


def _lpips_package():
    pkg = bench_metrics.lpips_package(bench_metrics.random_backbones())
    if pkg is None:
        pytest.skip("the lpips wheel is absent: `pip download lpips==0.1.4 --no-deps -d .whl` (or set $LPIPS_WHEEL)")
    return pkg


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_equals_the_lpips_package_with_the_same_backbone(net):
    sds = bench_metrics.random_backbones(seed=7)
    pkg = bench_metrics.lpips_package(sds)
    if pkg is None:
        _lpips_package()
    p, t = _images(3, (64, 48), seed=5)
    ref = pkg.LPIPS(net=net, verbose=False)(p, t, normalize=True).flatten()
    mine = LPIPS(net, backbone_state_dict=sds[net])
    torch.testing.assert_close(lpips(p, t, model=mine, chunk=2), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(lpips(p, t, mask=torch.ones(3, 64, 48), model=mine), ref, atol=1e-6, rtol=0)
    assert "torchvision" not in sys.modules  # the stand-in stayed inside the import


def test_lpips_is_zero_on_itself_and_grows_with_noise():
    torch.manual_seed(0)
    model = LPIPS("vgg", backbone_state_dict=lpips_backbone("vgg").state_dict())
    head, _, alpha = _head(64)
    x = head[None].expand(2, 3, 64, 64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    d = [lpips((x + s * noise).clamp(0, 1), x, model=model) for s in (0., 0.02, 0.1, 0.3)]
    assert d[0].abs().max() == 0
    assert all((a < b).all() for a, b in zip(d, d[1:]))
    assert lpips(x, x, mask=alpha.expand(2, 64, 64), model=model).abs().max() == 0


def test_lpips_backbone_loads_torchvision_files_and_never_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"alexnet-owt-7be5be79\.pth; looked at .*hub/checkpoints"):
        lpips(*_images(1, (64, 64)), net="alex")
    with pytest.raises(FileNotFoundError, match="download.pytorch.org/models/vgg16-397923af.pth"):
        LPIPS("vgg")
    torch.manual_seed(1)
    feats = lpips_backbone("alex").state_dict()
    full = {f"features.{k}": v for k, v in feats.items()} | {"classifier.1.weight": torch.zeros(4, 9216)}
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(full, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")  # torchvision's file layout
    assert find_backbone_weights("alex").name == "alexnet-owt-7be5be79.pth"
    p, t = _images(1, (64, 64))
    torch.testing.assert_close(lpips(p, t, net="alex"), LPIPS("alex", backbone_state_dict=feats)(p, t))


def test_mask_iou_and_background_baseline():
    head, _, alpha = _head(64)
    a, b = alpha > 0.5, torch.roll(alpha, 3, -1) > 0.5
    want = (a & b).sum() / (a | b).sum()
    assert abs(mask_iou(alpha, torch.roll(alpha, 3, -1)).item() - want.item()) < 1e-6
    assert mask_iou(alpha, alpha).item() == 1
    white = background_baseline(head[None])
    assert psnr(white, head[None]).item() > psnr(1 - head[None], head[None]).item()  # mostly background already


@pytest.mark.parametrize("bad, match", [
    (lambda p, t: ssim(p, t[:, :, :-1]), "same shape"),
    (lambda p, t: psnr(p, t.long()), "float tensor"),
    (lambda p, t: lpips(p[:, :2], t[:, :2], model=LPIPS("alex", backbone_state_dict=lpips_backbone("alex")
                                                       .state_dict())), "RGB images"),
    (lambda p, t: lpips(p, t, chunk=0), "`chunk` must be a positive int"),
    (lambda p, t: ssim(p, t, mask=torch.ones(3, 40)), "`mask` must be"),
    (lambda p, t: ssim(p, t, backend="gpu"), "`backend` must be"),
    (lambda p, t: LPIPS("vgg", backbone_state_dict=lpips_backbone("alex").state_dict()), "`backbone_state_dict` must"),
])
def test_bad_input_names_the_argument(bad, match):
    p, t = _images()
    with pytest.raises((ValueError, TypeError), match=match):
        bad(p, t)


def test_nearest_view_baseline_picks_the_smallest_angle():
    from facelift_nb.cameras import orbit
    from facelift_nb.layouts import get_layout
    from facelift_nb.metrics import nearest_view_baseline, nearest_views
    lay = get_layout("facelift6")
    az = torch.arange(32) * 11.25
    targets = orbit(az.tolist(), 20., hw=(8, 8))  # the 32-view training rig, 20° up
    gap = (az[:, None] - torch.tensor(lay.azimuths_deg)[None]).abs()
    want = torch.minimum(gap, 360 - gap).argmin(1)
    ties = torch.isclose(torch.minimum(gap, 360 - gap).sort(1).values[:, :2].diff(1)[:, 0], torch.tensor(0.))
    assert torch.equal(nearest_views(lay.cameras(hw=(8, 8)), targets)[~ties], want[~ties])
    views = torch.rand(6, 3, 8, 8)
    assert torch.equal(nearest_view_baseline(views, lay.cameras(hw=(8, 8)), targets)[~ties], views[want[~ties]])
