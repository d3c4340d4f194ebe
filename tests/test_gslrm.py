"""GS-LRM: a published-format checkpoint against a forward computed by hand from the published architecture, loading
errors, options."""
import math

import pytest
import torch
from safetensors.torch import save_file

from facelift_nb.cameras import Cameras, orbit
from facelift_nb.layouts import get_layout
from facelift_nb.models.gslrm import GSLRM

W, HD, P, G = 32, 16, 8, 2  # width, head dim, patch, global Gaussians (a 1-layer model)


def published_state_dict(num_layers=1, seed=0):
    "A state dict with the published key names and shapes, random values."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {"gaussian_position_embeddings": r(G, W), "patch_embedder.1.weight": r(W, 9 * P * P),
          "input_layer_norm.weight": 1 + r(W),
          "gaussian_upsampler.layernorm.weight": 1 + r(W), "gaussian_upsampler.linear.weight": r(14, W),
          "pixel_gaussian_decoder.0.weight": 1 + r(W), "pixel_gaussian_decoder.1.weight": r(P * P * 14, W)}
    for i in range(num_layers):
        sd |= {f"transformer_layers.{i}.norm1.weight": 1 + r(W), f"transformer_layers.{i}.norm2.weight": 1 + r(W),
               f"transformer_layers.{i}.attn.to_qkv.weight": r(3 * W, W),
               f"transformer_layers.{i}.attn.fc.weight": r(W, W),
               f"transformer_layers.{i}.mlp.mlp.0.weight": r(4 * W, W),
               f"transformer_layers.{i}.mlp.mlp.2.weight": r(W, 4 * W)}
    return sd


CONFIG = dict(image_size=16, patch_size=P, width=W, head_dim=HD, num_layers=1, num_global_gaussians=G)


def hand_forward(sd, images, cams):
    """The published GS-LRM written out with loops and explicit formulas, float64, independent of the library's model
    code."""
    images, K, c2w = images.double(), cams.K.double(), torch.linalg.inv(cams.w2c.double())
    B, V, _, H, Wd = images.shape
    ln = lambda x, w: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5) \
        * w.double()
    lin = lambda x, w: x @ w.double().T
    tokens, rays = [], []
    for b in range(B):
        seq, ray_b = [], []
        for v in range(V):
            fx, fy, cx, cy = K[b, v, 0, 0], K[b, v, 1, 1], K[b, v, 0, 2], K[b, v, 1, 2]
            R, o = c2w[b, v, :3, :3], c2w[b, v, :3, 3]
            feat = torch.zeros(H, Wd, 9, dtype=torch.float64)
            for y in range(H):
                for x in range(Wd):
                    dc = torch.stack([(x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, torch.tensor(1., dtype=torch.float64)])
                    d = R @ (dc / dc.norm())
                    d = d / d.norm()
                    feat[y, x] = torch.cat([images[b, v, :, y, x] * 2 - 1, d, o + (-(o @ d)) * d])
            for py in range(H // P):
                for px in range(Wd // P):
                    # [row, col, channel]: channel fastest, then column, then row
                    patch = feat[py * P:(py + 1) * P, px * P:(px + 1) * P]
                    seq.append(patch.reshape(-1))
                    ray_b.append([(o, feat[py * P + i // P, px * P + i % P, 3:6]) for i in range(P * P)])
        tokens.append(torch.stack(seq))
        rays.append(ray_b)
    x = torch.stack(tokens) @ sd["patch_embedder.1.weight"].double().T
    x = torch.cat([sd["gaussian_position_embeddings"].double()[None].expand(B, -1, -1), x], 1)
    x = ln(x, sd["input_layer_norm.weight"])
    pre = "transformer_layers.0."
    h = ln(x, sd[pre + "norm1.weight"])
    q, k, v = lin(h, sd[pre + "attn.to_qkv.weight"]).split(W, -1)
    heads = []
    for hh in range(W // HD):
        s = slice(hh * HD, (hh + 1) * HD)
        att = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 8 ** 0 / math.sqrt(HD), -1)
        heads.append(att @ v[..., s])
    x = x + lin(torch.cat(heads, -1), sd[pre + "attn.fc.weight"])
    h = ln(x, sd[pre + "norm2.weight"])
    x = x + lin(torch.nn.functional.gelu(lin(h, sd[pre + "mlp.mlp.0.weight"])), sd[pre + "mlp.mlp.2.weight"])
    glob = lin(ln(x[:, :G], sd["gaussian_upsampler.layernorm.weight"]), sd["gaussian_upsampler.linear.weight"])
    pix = lin(ln(x[:, G:], sd["pixel_gaussian_decoder.0.weight"]),
              sd["pixel_gaussian_decoder.1.weight"]).reshape(B, -1, P * P, 14)
    means = []
    for b in range(B):
        m = [glob[b, j, :3] for j in range(G)]
        for t_i, patch_rays in enumerate(rays[b]):
            for i, (o, d) in enumerate(patch_rays):
                raw = pix[b, t_i, i]
                t = 1.8 * (2 * torch.sigmoid(raw[:3].mean()) - 1) + (-(o @ d))
                m.append(o + t * d)
        means.append(torch.stack(m))
    allraw = torch.cat([glob, pix.reshape(B, -1, 14)], 1)
    return dict(means=torch.stack(means), scales=torch.exp((allraw[..., 6:9] - 2.3).clamp_max(-1.2)),
                opacities=torch.sigmoid(allraw[..., 13] - 2.0),
                quats=torch.nn.functional.normalize(allraw[..., 9:13], dim=-1),
                sh=allraw[..., 3:6])


def test_published_checkpoint_reproduces_hand_forward(tmp_path):
    sd = published_state_dict()
    torch.save({"model": sd, "optimizer": {}, "lr_scheduler": {}, "fwdbwd_pass_step": 3, "param_update_step": 3},
               tmp_path / "ckpt.pt")
    model = GSLRM.from_facelift_checkpoint(tmp_path / "ckpt.pt", config=CONFIG)
    cams = Cameras.stack([orbit([0., 90.], [0., 15.], fov_deg=50., hw=(16, 16))])
    images = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images, cams).gaussians
    ref = hand_forward(sd, images, cams)
    assert out.means.shape == (1, G + 2 * 16 * 16, 3)
    torch.testing.assert_close(out.means.double(), ref["means"], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out.scales.double(), ref["scales"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.opacities.double(), ref["opacities"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.quats.double(), ref["quats"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.sh[..., 0, :].double(), ref["sh"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["bare", "safetensors", "ddp", "fp16"])
def test_other_checkpoint_forms(tmp_path, kind):
    sd = published_state_dict()
    if kind == "bare": torch.save(sd, p := tmp_path / "sd.pt")
    elif kind == "safetensors": save_file(sd, p := tmp_path / "m.safetensors")
    elif kind == "ddp": torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, p := tmp_path / "ddp.pt")
    else: torch.save({"model": {k: v.half() for k, v in sd.items()}}, p := tmp_path / "half.pt")
    m = GSLRM.from_facelift_checkpoint(p, config=CONFIG)
    for k, v in sd.items():
        torch.testing.assert_close(m.state_dict()[k], v, atol=1e-3 if kind == "fp16" else 0,
                                   rtol=1e-3 if kind == "fp16" else 0)


def test_checkpoint_errors(tmp_path):
    sd = published_state_dict()
    with pytest.raises(FileNotFoundError, match="ckpt_0000000000021125"):
        GSLRM.from_facelift_checkpoint(tmp_path / "none.pt", config=CONFIG)
    torch.save({"model": sd}, tmp_path / "ok.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:500])
    with pytest.raises(ValueError, match="weights-only"):
        GSLRM.from_facelift_checkpoint(tmp_path / "trunc.pt", config=CONFIG)
    torch.save({"model": sd, "evil": object()}, tmp_path / "pickle.pt")  # arbitrary objects are never unpickled
    with pytest.raises(ValueError, match="weights-only"):
        GSLRM.from_facelift_checkpoint(tmp_path / "pickle.pt", config=CONFIG)
    torch.save({"model": {**sd, "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected \(1\): \['extra.weight'\]"):
        GSLRM.from_facelift_checkpoint(tmp_path / "extra.pt", config=CONFIG)
    with pytest.raises(ValueError, match="missing"):  # a 1-layer file into the 2-layer tiny config
        GSLRM.from_facelift_checkpoint(tmp_path / "ok.pt", config={**CONFIG, "num_layers": 2})
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="bare state dict"):
        GSLRM.from_facelift_checkpoint(tmp_path / "odd.pt", config=CONFIG)


def _tiny_inputs(seed=0):
    torch.manual_seed(seed)
    model = GSLRM(**GSLRM.tiny_config())
    cams = Cameras.stack([get_layout("facelift6").cameras(hw=(32, 32))] * 2)
    return model, torch.rand(2, 6, 3, 32, 32), cams


def test_options_do_not_change_results():
    model, imgs, cams = _tiny_inputs()
    with torch.no_grad():
        ref = model(imgs, cams).gaussians
        eager = GSLRM(**{**GSLRM.tiny_config(), "attention": "eager"})
        eager.load_state_dict(model.state_dict())
        torch.testing.assert_close(eager(imgs, cams).gaussians.means, ref.means, atol=1e-5, rtol=1e-5)
        chunked = GSLRM(**{**GSLRM.tiny_config(), "head_chunk_tokens": 7})
        chunked.load_state_dict(model.state_dict())
        torch.testing.assert_close(chunked(imgs, cams).gaussians.means, ref.means)
        bf16 = model(imgs, cams, autocast_dtype=torch.bfloat16).gaussians
        assert (bf16.means - ref.means).abs().mean() < 0.05
    # the second subject's Gaussians do not depend on the first subject's images
    imgs2 = imgs.clone()
    imgs2[0] = torch.rand_like(imgs2[0])
    with torch.no_grad():
        torch.testing.assert_close(model(imgs2, cams).gaussians.means[1], ref.means[1], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_same_gradients():
    model, imgs, cams = _tiny_inputs()
    loss = lambda: model(imgs, cams).gaussians.means.square().mean()
    loss().backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.enable_gradient_checkpointing()
    loss().backward()
    for a, p in zip(g1, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)


def test_render_inputs_and_reconstruct():
    model, imgs, cams = _tiny_inputs()
    model = GSLRM(**{**GSLRM.tiny_config(), "image_size": 16})
    small = Cameras.stack([get_layout("facelift6").cameras(hw=(16, 16))])
    with torch.no_grad():
        out = model(torch.rand(1, 6, 3, 16, 16), small, render_inputs=True)
    assert out.render.rgb.shape == (1, 6, 16, 16, 3)
    sets = model.reconstruct(torch.rand(1, 6, 3, 16, 16), small, filters=None)
    assert len(sets[0]) == 2 + 6 * 256
    with pytest.raises(ValueError, match="filters"):
        model.reconstruct(torch.rand(1, 6, 3, 16, 16), small, filters="strict")


def test_save_pretrained_round_trip(tmp_path):
    model, imgs, cams = _tiny_inputs()
    model.save_pretrained(tmp_path / "m")
    back = GSLRM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(imgs, cams).gaussians.means, model(imgs, cams).gaussians.means, atol=0, rtol=0)


def test_published_parameter_count():
    with torch.device("meta"):
        m = GSLRM()
    assert sum(p.numel() for p in m.parameters()) == 303_565_824
    tiny = GSLRM(**GSLRM.tiny_config())
    assert 150_000 < sum(p.numel() for p in tiny.parameters()) < 250_000
