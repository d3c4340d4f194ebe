"""Gaussian container, PLY round trips (incl. the published layout), filters against the published filter rules,
transforms."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from plyfile import PlyData, PlyElement

from facelift_nb.cameras import quat_to_rotation
from facelift_nb.splats import (
    PLY_PROPERTIES,
    SH_C0,
    Gaussians,
    crop_box,
    facelift_filters,
    filter_floaters,
    filter_opacity,
    filter_scale,
    load_ply,
    quat_multiply,
    rotation_to_quat,
    save_ply,
)
from facelift_nb.testing import head_scene, shell_scene


def rand_g(n=300, degree=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians.from_raw(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                              torch.randn(n, 3, generator=g) - 3, torch.randn(n, generator=g) * 3,
                              torch.randn(n, (degree + 1) ** 2, 3, generator=g))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip(tmp_path, degree):
    g = rand_g(degree=degree)
    back = load_ply(save_ply(tmp_path / "g.ply", g))
    assert back.sh_degree == degree
    for f in ("means", "quats", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(back, f), getattr(g, f), rtol=2e-6, atol=1e-7)


def test_ply_file_round_trip(tmp_path):
    "Positions, colours and SH come back bit-exact; activated fields to float32 precision."
    save_ply(tmp_path / "a.ply", rand_g(degree=3))
    save_ply(tmp_path / "b.ply", load_ply(tmp_path / "a.ply"))
    a, b = PlyData.read(str(tmp_path / "a.ply"))["vertex"].data, PlyData.read(str(tmp_path / "b.ply"))["vertex"].data
    for p in PLY_PROPERTIES:
        if p.startswith("opacity"):
            np.testing.assert_allclose(a[p], b[p], rtol=1e-5, atol=1e-5)  # logit(sigmoid(x)) in float64 from float32
        elif p.startswith("scale") or p.startswith("rot"):  # exp/log, renormalised quaternions
            np.testing.assert_allclose(a[p], b[p], rtol=1e-6, atol=1e-6)
        else:
            assert np.array_equal(a[p], b[p]), p


def test_ply_layout_matches_facts(tmp_path):
    save_ply(tmp_path / "g.ply", rand_g())
    ply = PlyData.read(str(tmp_path / "g.ply"))
    props = ply["vertex"].properties
    assert [p.name for p in props] == PLY_PROPERTIES and len(props) == 62
    assert all((p.val_dtype in ("u1", "uint8")) == (p.name in ("red", "green", "blue")) for p in props)
    assert ply.byte_order == "<" and not ply.text


def _published_style_ply(path, n=50, seed=0, with_rgb=True, n_rest=45):
    "A PLY written the way the FaceLift code writes one: raw values, f_rest zeros, rgb bytes."
    rng = np.random.default_rng(seed)
    names = (["x", "y", "z"] + (["red", "green", "blue"] if with_rgb else []) + [f"f_dc_{i}" for i in range(3)]
             + [f"f_rest_{i}" for i in range(n_rest)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    v = np.zeros(n, dtype=[(p, "u1" if p in ("red", "green", "blue") else "f4") for p in names])
    raw = {p: rng.normal(size=n).astype(np.float32) for p in names
           if p not in ("red", "green", "blue") and not p.startswith("f_rest")}
    raw.update({f"scale_{i}": (rng.normal(size=n) - 4).astype(np.float32) for i in range(3)})
    for p, a in raw.items(): v[p] = a
    if with_rgb:
        for c in ("red", "green", "blue"): v[c] = rng.integers(0, 255, n)
    PlyData([PlyElement.describe(v, "vertex")], byte_order="<").write(str(path))
    return raw


@pytest.mark.parametrize("with_rgb,n_rest", [(True, 45), (False, 45), (False, 0), (True, 9)])
def test_load_published_layout(tmp_path, with_rgb, n_rest):
    raw = _published_style_ply(tmp_path / "pub.ply", with_rgb=with_rgb, n_rest=n_rest)
    g = load_ply(tmp_path / "pub.ply")
    assert g.sh_degree == 0  # f_rest all zero
    q = torch.tensor(np.stack([raw[f"rot_{i}"] for i in range(4)], -1))
    torch.testing.assert_close(g.quats, torch.nn.functional.normalize(q, dim=-1))
    torch.testing.assert_close(g.scales, torch.exp(torch.tensor(np.stack([raw[f"scale_{i}"] for i in range(3)], -1))))
    torch.testing.assert_close(g.opacities, torch.sigmoid(torch.tensor(raw["opacity"])))
    dc = torch.tensor(np.stack([raw[f"f_dc_{i}"] for i in range(3)], -1))
    torch.testing.assert_close(g.colors, (SH_C0 * dc + 0.5).clamp_min(0))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "none.ply")
    v = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "pts.ply"))
    with pytest.raises(ValueError, match="missing vertex properties"):
        load_ply(tmp_path / "pts.ply")
    PlyData([PlyElement.describe(v, "face")]).write(str(tmp_path / "face.ply"))
    with pytest.raises(ValueError, match="no 'vertex' element"):
        load_ply(tmp_path / "face.ply")
    _published_style_ply(tmp_path / "bad.ply", n_rest=4)
    with pytest.raises(ValueError, match="f_rest"):
        load_ply(tmp_path / "bad.ply")


def test_save_errors(tmp_path):
    g = rand_g()
    batched = Gaussians(*(getattr(g, f)[None] for f in ("means", "quats", "scales", "opacities", "sh")))
    with pytest.raises(ValueError, match="one set"):
        save_ply(tmp_path / "x.ply", batched)
    with pytest.raises(TypeError):
        save_ply(tmp_path / "x.ply", "g")


def test_extreme_opacities_stay_finite(tmp_path):
    g = rand_g(4)
    g = Gaussians(g.means, g.quats, g.scales, torch.tensor([0., 1., 1e-30, 0.5]), g.sh)
    back = load_ply(save_ply(tmp_path / "e.ply", g))
    assert torch.isfinite(back.opacities).all()
    torch.testing.assert_close(back.opacities, g.opacities, atol=1e-7, rtol=0)


# ---------------------------------------------------------------- filters against the published rules definitions

def _facts_filters(m, s, o, scale_thr=0.1, floater=0.6):
    keep = o > 0.04
    keep &= (s.max(1) < scale_thr) | (m[:, 2] > 0)
    keep &= ~((np.abs(m[:, 0]) > floater) & (np.abs(m[:, 1]) > floater) & (m[:, 2] < -floater))
    keep &= (np.abs(m[:, 0]) <= 0.91) & (np.abs(m[:, 1]) <= 0.91) & (m[:, 2] >= -1) & (m[:, 2] <= 1)
    return keep


@given(st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_facelift_filters_match_definition(seed):
    rng = np.random.default_rng(seed)
    n = 500
    m = rng.uniform(-1.2, 1.2, (n, 3)).astype(np.float32)
    s = rng.uniform(0.001, 0.3, (n, 3)).astype(np.float32)
    o = rng.uniform(0, 0.2, n).astype(np.float32)
    q = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    g = Gaussians(torch.tensor(m), torch.tensor(q), torch.tensor(s), torch.tensor(o), torch.zeros(n, 1, 3))
    for preset, (thr, fl) in {"published": (0.1, 0.6), "web": (0.2, 0.75)}.items():
        out, counts = facelift_filters(g, preset=preset, report=True)
        keep = _facts_filters(m, s, o, thr, fl)
        np.testing.assert_array_equal(out.means.numpy(), m[keep])
        assert counts["input"] == n and counts["box"] == keep.sum()
    assert len(g) == n  # nothing modified in place


def test_individual_filters_and_errors():
    g = head_scene(800)
    assert len(filter_opacity(g, 0.95)) == 0 and len(filter_opacity(g, 0.5)) == len(g)
    assert len(filter_scale(g, 0.02, keep_above_z=None)) < len(g)
    assert len(filter_floaters(g)) == len(g)
    assert len(crop_box(g, (-0.1, -1, -1), (0.1, 1, 1))) < len(g)
    with pytest.raises(ValueError, match="lo <= hi"):
        crop_box(g, (1, 1, 1), (0, 0, 0))


# ---------------------------------------------------------------- quaternions and transforms

@given(st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_quaternion_helpers(seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(8, 4, generator=g, dtype=torch.float64), dim=-1)
    R = quat_to_rotation(q)
    q2 = rotation_to_quat(R)
    torch.testing.assert_close(quat_to_rotation(q2), R)
    p = torch.nn.functional.normalize(torch.randn(8, 4, generator=g, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(quat_to_rotation(quat_multiply(p, q)), quat_to_rotation(p) @ R)


def test_transform_errors():
    g = rand_g(degree=2)
    with pytest.raises(ValueError, match="degree 1"):
        g.transform(torch.eye(4))
    with pytest.raises(ValueError, match="handedness"):
        rand_g().transform(torch.diag(torch.tensor([-1., 1, 1, 1])))


def test_container_errors():
    g = shell_scene(10)
    batched = Gaussians(*(getattr(g, f)[None] for f in ("means", "quats", "scales", "opacities", "sh")))
    with pytest.raises(ValueError, match="batched"):
        batched[0]
    with pytest.raises(ValueError, match="at least one"):
        Gaussians.cat([])
    with pytest.raises(ValueError, match="1, 4, 9 or 16"):
        Gaussians(g.means, g.quats, g.scales, g.opacities, torch.zeros(10, 5, 3))
