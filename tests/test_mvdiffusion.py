"""Multi-view attention semantics (FACTS.md §5) and strict loading of the published MV UNet folder."""
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from facelift_nb.models.mvdiffusion import MVAttnProcessor, load_mv_unet, stock_unet_config, tiny_mv_unet_config


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
        y = x.clone(); y[V:] = torch.randn_like(y[V:])  # change the second object only
        torch.testing.assert_close(att(y)[:V], a[:V])
        z = x.clone(); z[3] = torch.randn_like(z[3])  # change view 3 of the first object
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
    cfg, mv = stock_unet_config({"_class_name": "UNetMV2DConditionModel", "down_block_types": ["CrossAttnDownBlockMV2D", "DownBlock2D"],
                                 "mid_block_type": "UNetMidBlockMV2DCrossAttn", "in_channels": 8, "num_views": 6,
                                 "sparse_mv_attention": True, "multiview_attention": True})
    assert cfg == {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "mid_block_type": "UNetMidBlock2DCrossAttn", "in_channels": 8}
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
