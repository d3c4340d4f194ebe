"""Renderer: backend parity, gradients, semantics of the reference rasteriser, turntables and files."""
import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from facelift_nb.cameras import Cameras, orbit
from facelift_nb.layouts import get_layout
from facelift_nb.render import (
    image_grid,
    project,
    render,
    render_turntable,
    save_image,
    save_video,
    sh_to_rgb,
    turntable_cameras,
)
from facelift_nb.splats import Gaussians
from facelift_nb.testing import head_scene, shell_scene


@pytest.fixture(params=["c", "numba"])
def blend(request, monkeypatch):
    "Run a test once with each sort+blend implementation of the fast CPU path."
    monkeypatch.setenv("FACELIFT_NB_BLEND", request.param)
    return request.param


def _with_sh(g, degree, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rest = torch.randn(len(g), (degree + 1) ** 2 - 1, 3, generator=gen) * 0.3
    return Gaussians(g.means, g.quats, g.scales, g.opacities, torch.cat([g.sh, rest], 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hw", [(48, 48), (37, 53)])
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_fast_cpu_matches_torch(seed, hw, degree, blend):
    g = _with_sh(shell_scene(2500, seed=seed, scale_range=(0.005, 0.04)), degree, seed)
    cams = orbit([0., 70., 200.], [0., 20., -30.], radius=[2.7, 2.0, 1.4], fov_deg=40., hw=hw)
    a, b = render(g, cams, backend="torch", bg=(0.2, 0.5, 1.)), render(g, cams, backend="cpu", bg=(0.2, 0.5, 1.))
    assert (a.rgb - b.rgb).abs().max() < 1e-4
    assert (a.alpha - b.alpha).abs().max() < 1e-4
    assert (a.depth - b.depth).abs().max() < 1e-3 * a.depth.max()
    assert a.alpha.max() > 0.9 and a.alpha.min() < 0.1  # a real picture: opaque subject and open background


def test_batched_gaussians_and_cameras(blend):
    g1, g2 = shell_scene(500, seed=1), head_scene(800)
    n = min(len(g1), len(g2))
    fields = ("means", "quats", "scales", "opacities", "sh")
    gb = Gaussians(*(torch.stack([getattr(g1, f)[:n], getattr(g2, f)[:n]]) for f in fields))
    cams = Cameras.stack([orbit([0., 90.], hw=(24, 24))] * 2)
    out = render(gb, cams, backend="cpu")
    assert out.rgb.shape == (2, 2, 24, 24, 3)
    g2n = Gaussians(*(getattr(g2, f)[:n] for f in ("means", "quats", "scales", "opacities", "sh")))
    single = render(g2n, orbit([0., 90.], hw=(24, 24)), backend="cpu")
    torch.testing.assert_close(out.rgb[1], single.rgb)


def test_depth_ties_follow_gaussian_index(blend):
    # two identical footprints at exactly the same depth: index 0 is composited first, for every backend
    means = torch.tensor([[0., 0, 0], [0., 0, 0]])
    sh = torch.stack([torch.tensor([[1., -1, -1]]), torch.tensor([[-1., -1, 1]])]) / 0.28209479
    g = Gaussians(means, torch.tensor([[1., 0, 0, 0]] * 2), torch.full((2, 3), 0.05), torch.tensor([0.9, 0.9]), sh)
    cam = orbit([0.], hw=(16, 16))
    for be in ("torch", "cpu"):
        c = render(g, cam, backend=be).rgb[0, 8, 8]
        assert c[0] > c[2], (be, c)  # the first (red) Gaussian dominates
    swapped = Gaussians(means, g.quats, g.scales, g.opacities, sh.flip(0))
    assert render(swapped, cam, backend="cpu").rgb[0, 8, 8, 2] > render(swapped, cam, backend="cpu").rgb[0, 8, 8, 0]


def test_near_culling_and_background(blend):
    g = Gaussians(torch.tensor([[0., -2.7 + 0.15, 0]]), torch.tensor([[1., 0, 0, 0]]), torch.full((1, 3), 0.01),
                  torch.tensor([0.99]), torch.zeros(1, 1, 3))  # 0.15 in front of the front camera: culled (z <= 0.2)
    for be in ("torch", "cpu"):
        out = render(g, orbit([0.], hw=(8, 8)), bg=(0.1, 0.2, 0.3), backend=be)
        torch.testing.assert_close(out.rgb[0], torch.tensor([0.1, 0.2, 0.3]).expand(8, 8, 3))
        assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0


def test_alpha_cap_and_early_stop(blend):
    # 5 Gaussians stacked on the optical axis, alpha 0.95 at the centre pixel: T = 0.05, 0.0025, 1.25e-4, then the
    # 4th would give 6.25e-6 < 1e-4, so the pixel stops with T = 1.25e-4 after three; opacity 1 is capped at 0.99
    n = 5
    means = torch.stack([torch.tensor([0., -0.5 + 0.1 * i, 0]) for i in range(n)])
    g = Gaussians(means, torch.tensor([[1., 0, 0, 0]] * n), torch.full((n, 3), 0.2), torch.full((n,), 0.95),
                  torch.zeros(n, 1, 3))
    cam = orbit([0.], hw=(9, 9))
    for be in ("cpu", "torch"):
        out = render(g, cam, backend=be)
        torch.testing.assert_close(1 - out.alpha[0, 4, 4], torch.tensor(1.25e-4), atol=2e-6, rtol=0)
    capped = Gaussians(means[:1], g.quats[:1], g.scales[:1], torch.ones(1), g.sh[:1])
    torch.testing.assert_close(render(capped, cam, backend="cpu").alpha[0, 4, 4], torch.tensor(0.99))


def test_gradcheck_torch_backend():
    torch.manual_seed(0)
    cam = orbit([0.], fov_deg=40., hw=(8, 8)).to(dtype=torch.float64)
    base = shell_scene(6, seed=3, scale_range=(0.08, 0.15), opacity_range=(0.3, 0.6), dtype=torch.float64)

    def f(means, scales, opacities, sh, quats):
        g = Gaussians(means, quats, scales, opacities, sh)
        out = render(g, cam, backend="torch", bg=(0.3, 0.3, 0.3))
        return out.rgb, out.alpha

    fields = (base.means * 0.6, base.scales, base.opacities, base.sh, base.quats)
    inputs = tuple(t.clone().requires_grad_() for t in fields)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_backend_choice_and_errors():
    g = shell_scene(50)
    cam = orbit([0.], hw=(8, 8))
    with pytest.raises(ValueError, match="backend"):
        render(g, cam, backend="vulkan")
    with pytest.raises(TypeError):
        render("g", cam)
    with pytest.raises(ValueError, match="RGB triple"):
        render(g, cam, bg=(1., 1.))
    with pytest.raises(ImportError, match=r"facelift-nb\[gsplat\]"):
        render(g, cam, backend="gsplat")
    # "auto" uses the differentiable backend when gradients are needed
    gg = Gaussians(g.means.clone().requires_grad_(), g.quats, g.scales, g.opacities, g.sh)
    assert render(gg, cam).rgb.requires_grad


@pytest.mark.gpu
def test_gsplat_parity_on_cuda():
    g = shell_scene(20000, seed=0).to("cuda")
    cams = get_layout("facelift6").cameras(hw=(128, 128)).to("cuda")
    a = render(g, cams, backend="gsplat")
    b = render(g.to("cpu"), cams.to("cpu"), backend="cpu")
    assert (a.rgb.cpu() - b.rgb).abs().mean() < 5e-3
    assert (a.alpha.cpu() - b.alpha).abs().mean() < 5e-3


def test_turntable_convention_and_files(tmp_path):
    cams = turntable_cameras(150)
    world_az = torch.rad2deg(torch.atan2(cams.centers[:, 1], cams.centers[:, 0])) % 360
    expected = torch.tensor(np.linspace(270, 630, 150, endpoint=False) % 360, dtype=torch.float32)
    assert ((world_az - expected + 180) % 360 - 180).abs().max() < 1e-3
    torch.testing.assert_close(cams.fov_deg[:, 0], torch.full((150,), 50.), atol=1e-4, rtol=0)
    torch.testing.assert_close(cams.centers.norm(dim=-1), torch.full((150,), 2.7))
    frames = render_turntable(head_scene(1500), n_frames=6, hw=(32, 32), progress=False)
    assert frames.rgb.shape == (6, 32, 32, 3)
    mp4 = save_video(frames.rgb, tmp_path / "t.mp4", fps=10)
    r = imageio.get_reader(mp4)
    assert r.count_frames() == 6
    gif = save_video(frames.rgb, tmp_path / "t.gif", fps=10)
    assert len(imageio.mimread(gif)) == 6
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        save_video(frames.rgb, tmp_path / "t.avi")
    grid = image_grid(frames.rgb, ncols=3, pad=1)
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3) and grid.dtype == np.uint8
    png = save_image(grid, tmp_path / "g.png")
    assert imageio.imread(png).shape == grid.shape


def test_head_scene_views_differ():
    out = render(head_scene(), orbit([0., 90., 180.], hw=(48, 48)), backend="cpu").rgb
    assert (out[0] - out[2]).abs().mean() > 0.02  # front and back differ (face vs hair)


def test_similarity_transform_keeps_images():
    g = _with_sh(head_scene(1500), 1)
    cams = orbit([0., 120.], [10., -20.], hw=(32, 32))
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    R = R * torch.sign(torch.linalg.det(R))
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = 1.5 * R, torch.tensor([0.3, -0.2, 1.0])
    a = render(g, cams, backend="cpu").rgb
    b = render(g.transform(T), cams.transform(T), backend="cpu").rgb
    assert (a - b).abs().max() < 2e-3


def test_project_matches_facts_front_camera():
    g = Gaussians(torch.tensor([[0., 0, 0]]), torch.tensor([[1., 0, 0, 0]]), torch.full((1, 3), 0.01),
                  torch.tensor([0.5]), torch.zeros(1, 1, 3))
    cam = orbit([0.])
    p = project(g, cam.K[0], cam.w2c[0], cam.hw)
    torch.testing.assert_close(p.means2d[0], torch.tensor([256., 256.]))
    f = 548.9937744140625
    var = (f * 0.01 / 2.7) ** 2 + 0.3
    torch.testing.assert_close(p.conics[0], torch.tensor([1 / var, 0., 1 / var]), rtol=1e-4, atol=1e-6)
    assert p.radii[0] == math.ceil(3 * math.sqrt(var))
    torch.testing.assert_close(sh_to_rgb(torch.zeros(1, 1, 3)), torch.full((1, 3), 0.5))
