"""Multi-view attention semantics (the published rule) and strict loading of the published MV UNet folder."""
import json
import json as _json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from PIL import Image

from facelift_nb.layouts import get_layout, view_prompts
from facelift_nb.models.mvdiffusion import (
    MVAttnProcessor,
    MVDiffusionOutput,
    MVDiffusionPipeline,
    encode_view_prompts,
    load_mv_unet,
    load_prompt_embeds,
    save_prompt_embeds,
    stock_unet_config,
    tiny_mv_unet_config,
    tiny_text_components,
)
from facelift_nb.testing import random_prompt_embeds, reference_path


def _attn(seed=0):
    torch.manual_seed(seed)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()


def test_reference_mode_matches_the_published_rule():
    att, V, L = _attn(), 4, 3
    x = torch.randn(2 * V, L, 16)
    att.set_processor(MVAttnProcessor(V, "reference"))
    with torch.no_grad():
        out = att(x)
        q, k, v = att.to_q(x), att.to_k(x), att.to_v(x)
        for b in range(2):
            for j in range(V):
                r, r0 = b * V + j, b * V
                kk, vv = torch.cat([k[r0], k[r]]), torch.cat([v[r0], v[r]])
                heads = []
                for h in range(2):
                    s = slice(8 * h, 8 * h + 8)
                    w = torch.softmax(q[r, :, s] @ kk[:, s].T / 8 ** 0.5, -1)
                    heads.append(w @ vv[:, s])
                torch.testing.assert_close(out[r], att.to_out[0](torch.cat(heads, -1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["reference", "dense"])
def test_objects_are_independent_and_reference_view0_sees_only_itself(mode):
    att, V = _attn(1), 6
    x = torch.randn(2 * V, 5, 16)
    att.set_processor(MVAttnProcessor(V, mode))
    with torch.no_grad():
        a = att(x)
        y = x.clone()
        y[V:] = torch.randn_like(y[V:])  # change the second object only
        torch.testing.assert_close(att(y)[:V], a[:V])
        z = x.clone()
        z[3] = torch.randn_like(z[3])  # change view 3 of the first object
        changed = (att(z) - a).abs().amax((1, 2)) > 1e-6
    if mode == "reference":  # view 0 and views != 3 attend to [view 0; own view] only
        assert changed.tolist()[:V] == [False, False, False, True, False, False]
    else:
        assert all(changed.tolist()[:V])


@pytest.mark.parametrize("V", [4, 6, 8])
def test_any_number_of_views(tmp_path, V):
    torch.manual_seed(0)
    UNet2DConditionModel(**tiny_mv_unet_config()).save_pretrained(tmp_path / "unet")
    cfg = json.loads((tmp_path / "unet" / "config.json").read_text()) | {"num_views": 6, "sparse_mv_attention": True}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(cfg))
    unet = load_mv_unet(tmp_path / "unet", num_views=V)
    with torch.no_grad():
        out = unet(torch.randn(2 * V, 8, 8, 8), torch.tensor(5), encoder_hidden_states=torch.randn(2 * V, 77, 32),
                   class_labels=torch.randn(2 * V, 64)).sample
    assert out.shape == (2 * V, 4, 8, 8)


def test_config_mapping_and_loader_errors(tmp_path):
    cfg, mv = stock_unet_config({"_class_name": "UNetMV2DConditionModel",
                                 "down_block_types": ["CrossAttnDownBlockMV2D", "DownBlock2D"],
                                 "mid_block_type": "UNetMidBlockMV2DCrossAttn", "in_channels": 8, "num_views": 6,
                                 "sparse_mv_attention": True, "multiview_attention": True})
    assert cfg == {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                   "mid_block_type": "UNetMidBlock2DCrossAttn", "in_channels": 8}
    assert mv == {"num_views": 6, "sparse_mv_attention": True, "multiview_attention": True}
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_mv_unet(tmp_path)
    torch.manual_seed(0)
    UNet2DConditionModel(**tiny_mv_unet_config()).save_pretrained(tmp_path / "u")
    with pytest.raises(ValueError, match="num_views"):
        load_mv_unet(tmp_path / "u")
    cfg = json.loads((tmp_path / "u" / "config.json").read_text()) | {"num_views": 6, "cross_attention_dim": 16}
    (tmp_path / "u" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_mv_unet(tmp_path / "u")
    with pytest.raises(ValueError, match="mode"):
        MVAttnProcessor(6, "sparse")
    with pytest.raises(ValueError, match="num_views"):
        MVAttnProcessor(0)


# ---- the pipeline ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipe():
    p = MVDiffusionPipeline.tiny()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def front(front_png):
    return Image.open(front_png)  # a procedural head seen by the published front camera, RGBA 512²


@pytest.fixture
def published_like_embeds(tmp_path):
    "A prompt-embeddings file in the published format: a plain [6, 77, 1024] float16 tensor, no sidecar (random)."
    path = tmp_path / "embeds" / "clr_embeds.pt"
    path.parent.mkdir()
    torch.save(random_prompt_embeds(), path)
    return path


def _check_published_prompt_file(path, tmp_path):
    e = load_prompt_embeds(path, layout="facelift6", cross_attention_dim=1024)
    assert e.shape == (6, 77, 1024) and e.dtype == torch.float32
    with pytest.raises(ValueError, match="cross_attention_dim is 768"):
        load_prompt_embeds(path, cross_attention_dim=768)
    with pytest.raises(ValueError, match="layout has 4"):
        load_prompt_embeds(path, layout="uniform4")
    with pytest.raises(FileNotFoundError, match="clr_embeds.pt"):
        load_prompt_embeds(tmp_path / "nope.pt")


def test_published_format_prompt_file_loads_and_is_checked(published_like_embeds, tmp_path):
    _check_published_prompt_file(published_like_embeds, tmp_path)


@pytest.mark.reference
def test_published_prompt_file_loads_and_is_checked(tmp_path):
    path = reference_path("facelift_prompt_embeds_6view/clr_embeds.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(raw, torch.Tensor) and raw.shape == (6, 77, 1024)
    assert raw.dtype == torch.float16  # the stand-in file copies this shape and dtype
    _check_published_prompt_file(path, tmp_path)


def test_prompt_embeds_round_trip_and_slot_check(tmp_path):
    enc, tok = tiny_text_components()
    e = encode_view_prompts("uniform8", enc, tok)
    assert e.shape == (8, 77, 32)
    assert not torch.allclose(e[0], e[1])  # the slot names reach the embeddings
    p = save_prompt_embeds(tmp_path / "e8.pt", e, "uniform8")
    meta = _json.loads((tmp_path / "e8.json").read_text())
    assert meta["prompts"] == list(view_prompts("uniform8")) and meta["shape"] == [8, 77, 32]
    torch.testing.assert_close(load_prompt_embeds(p, "uniform8", 32), e)
    shuffled = get_layout("uniform8")
    from facelift_nb.layouts import ViewLayout
    other = ViewLayout(tuple(reversed(shuffled.names)), tuple(reversed(shuffled.azimuths_deg)), shuffled.elevations_deg)
    with pytest.raises(ValueError, match="wrong prompts"):
        load_prompt_embeds(p, other, 32)
    with pytest.raises(ValueError, match="layout has 6"):
        save_prompt_embeds(tmp_path / "bad.pt", e, "facelift6")


def test_generation_is_seeded_and_carries_layout(tiny_pipe, front):
    a = tiny_pipe(front, num_inference_steps=3, generator=7)
    b = tiny_pipe(front, num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    c = tiny_pipe(front, num_inference_steps=3, generator=8)
    assert isinstance(a, MVDiffusionOutput) and a.layout.names == get_layout("facelift6").names
    assert a.images.shape == (6, 16, 16, 3) and 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(a.pil()) == 6 and a.pil()[0].size == (16, 16)
    with pytest.raises(KeyError, match="no slot"):
        a.view("top")


def test_cfg_and_conditioning_follow_the_published_rule(tiny_pipe, front, monkeypatch):
    seen = []
    orig = tiny_pipe.unet.forward

    def spy(sample, t, encoder_hidden_states=None, class_labels=None, **kw):
        seen.append((sample.clone(), encoder_hidden_states.clone(), class_labels.clone()))
        return orig(sample, t, encoder_hidden_states=encoder_hidden_states, class_labels=class_labels, **kw)
    monkeypatch.setattr(tiny_pipe.unet, "forward", spy)
    tiny_pipe(front, num_inference_steps=2, guidance_scale=3.0, generator=0)
    x, prompts, cls = seen[0]
    V = 6
    assert x.shape == (2 * V, 8, 8, 8)
    assert torch.all(cls[:V] == 0) and torch.all(x[:V, 4:] == 0)  # unconditional: zero class vector and zero latent
    assert cls[V:].abs().sum() > 0 and x[V:, 4:].abs().sum() > 0
    assert torch.allclose(cls[V], cls[-1]) and torch.allclose(x[V, 4:], x[-1, 4:])  # the same condition for every view
    torch.testing.assert_close(prompts[:V], prompts[V:])  # prompts unchanged in the unconditional branch
    torch.testing.assert_close(prompts[:V], tiny_pipe.prompt_embeds)
    assert cls.shape[1] == 64  # CLIP embedding (32) + noise-level embedding (32)
    seen.clear()
    tiny_pipe(front, num_inference_steps=1, guidance_scale=1.0, generator=0)
    assert seen[0][0].shape[0] == V  # no guidance: no unconditional branch


def test_noise_augmentation_at_level_zero_keeps_the_embedding(tiny_pipe, front):
    from facelift_nb.models.mvdiffusion import _image_tensor
    x = _image_tensor(front, (1., 1., 1.))
    e = tiny_pipe.image_embeds(x, torch.Generator().manual_seed(0))
    pix = tiny_pipe.feature_extractor(images=Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()),
                                      return_tensors="pt").pixel_values
    clean = tiny_pipe.image_encoder(pix).image_embeds
    torch.testing.assert_close(e[:, :32], clean, atol=0.05, rtol=0.05)
    from diffusers.models.embeddings import get_timestep_embedding
    torch.testing.assert_close(e[:, 32:], get_timestep_embedding(torch.tensor([0]), 32, flip_sin_to_cos=True,
                                                                 downscale_freq_shift=0))


@pytest.mark.parametrize("V", [4, 8])
def test_other_view_counts(V, front):
    p = MVDiffusionPipeline.tiny(layout=f"uniform{V}")
    p.set_progress_bar_config(disable=True)
    out = p(front, num_inference_steps=2, generator=0)
    assert out.images.shape == (V, 16, 16, 3) and len(out.layout) == V and p.unet.mv_num_views == V


def test_saved_folder_has_published_naming_and_reloads(tiny_pipe, front, tmp_path):
    folder = tiny_pipe.save_pretrained(tmp_path / "pipeckpts")
    for c in ("unet", "vae", "image_encoder", "feature_extractor", "image_normalizer", "image_noising_scheduler",
              "scheduler", "text_encoder", "tokenizer", "prompt_embeds", "model_index.json"):
        assert (folder / c).exists(), c
    cfg = _json.loads((folder / "unet" / "config.json").read_text())
    assert cfg["down_block_types"] == ["CrossAttnDownBlockMV2D", "DownBlock2D"]
    assert cfg["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlockMV2D"] \
        and cfg["mid_block_type"] == "UNetMidBlockMV2DCrossAttn"
    assert cfg["num_views"] == 6 and cfg["sparse_mv_attention"] is True
    index = _json.loads((folder / "model_index.json").read_text())
    assert index["unet"][1] == "UNetMV2DConditionModel" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    p2 = MVDiffusionPipeline.from_pretrained(folder)
    p2.set_progress_bar_config(disable=True)
    torch.testing.assert_close(p2(front, num_inference_steps=2, generator=1).images,
                               tiny_pipe(front, num_inference_steps=2, generator=1).images)
    # overwrite keeps the old folder as a backup
    tiny_pipe.save_pretrained(folder, overwrite=True)
    assert len(list(tmp_path.glob("pipeckpts.bak-*"))) == 1 and not list(tmp_path.glob(".pipeckpts.*"))
    with pytest.raises(FileExistsError):
        tiny_pipe.save_pretrained(folder)


def test_loader_never_substitutes(tiny_pipe, published_like_embeds, tmp_path):
    folder = tiny_pipe.save_pretrained(tmp_path / "p")
    import shutil
    shutil.move(str(folder / "prompt_embeds"), str(tmp_path / "pe"))
    shutil.move(str(folder / "text_encoder"), str(tmp_path / "te"))
    with pytest.raises(ValueError, match="no prompt embeddings"):
        MVDiffusionPipeline.from_pretrained(folder)
    # the published way: the embeddings file passed explicitly
    p = MVDiffusionPipeline.from_pretrained(folder, prompt_embeds=tmp_path / "pe" / "clr_embeds.pt")
    assert p.prompt_embeds.shape == (6, 77, 32)
    with pytest.raises(ValueError, match="cross_attention_dim is 32"):
        MVDiffusionPipeline.from_pretrained(folder, prompt_embeds=published_like_embeds)
    shutil.move(str(folder / "vae"), str(tmp_path / "vae"))
    with pytest.raises(FileNotFoundError, match=r"missing \['vae'\]"):
        MVDiffusionPipeline.from_pretrained(folder, prompt_embeds=tmp_path / "pe" / "clr_embeds.pt")
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        MVDiffusionPipeline.from_pretrained("nobody/no-such-repo-facelift-nb", subfolder="pipeckpts")


def test_bad_inputs(tiny_pipe):
    with pytest.raises(ValueError, match="must be square"):
        tiny_pipe(torch.rand(3, 16, 24), num_inference_steps=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        tiny_pipe(torch.rand(3, 16, 16) * 3, num_inference_steps=1)
    with pytest.raises(TypeError, match="PIL image"):
        tiny_pipe("front.png", num_inference_steps=1)
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipe(torch.rand(3, 16, 16), num_inference_steps=0)
    with pytest.raises(ValueError, match="prompt embeddings are for slots"):
        tiny_pipe(torch.rand(3, 16, 16), layout="uniform6", num_inference_steps=1)
    rgba = torch.zeros(16, 16, 4)  # fully transparent: the background colour shows
    from facelift_nb.models.mvdiffusion import _image_tensor
    torch.testing.assert_close(_image_tensor(rgba, (0.2, 0.4, 0.6)),
                               torch.tensor([0.2, 0.4, 0.6])[:, None, None].expand(3, 16, 16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype, front):
    p = MVDiffusionPipeline.tiny().to("cuda", dtype)
    p.set_progress_bar_config(disable=True)
    out = p(front, num_inference_steps=3, generator=0)
    assert out.images.shape == (6, 16, 16, 3) and torch.isfinite(out.images).all()
    ref = MVDiffusionPipeline.tiny()
    ref.set_progress_bar_config(disable=True)
    assert (out.images - ref(front, num_inference_steps=3, generator=0).images).abs().mean() < 0.05
