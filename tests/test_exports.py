"""Splat export formats: each round trip within its documented quantisation error, per field, on the synthetic
subjects and on random sets; bytes checked against the formats' specifications; atomic writers; bad input refused.
"""
import gzip
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelift_nb.exports import (
    SPLAT_FORMATS,
    importance_order,
    load_compressed_ply,
    load_splat,
    load_splats,
    load_spz,
    morton_order,
    save_compressed_ply,
    save_splat,
    save_splats,
    save_spz,
    spz_payload,
)
from facelift_nb.splats import SH_C0, Gaussians, load_ply, save_ply
from facelift_nb.testing import head_scene, shell_scene

C0 = SH_C0
ROT_BOUND_DEG = {"splat": 1.0, "spz": 0.3, "compressed-ply": 0.3}  # the notebook's table


def with_sh(g: Gaussians, degree: int, amp: float = 0.3, seed: int = 0) -> Gaussians:
    "`g` with random SH terms of `degree` (|c| <= amp)."
    k = (degree + 1) ** 2 - 1
    rest = amp * (2 * torch.rand(len(g), k, 3, generator=torch.Generator().manual_seed(seed)) - 1)
    return Gaussians(g.means, g.quats, g.scales, g.opacities, torch.cat([g.sh[:, :1], rest.to(g.dtype)], 1))


def angle_deg(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    "Rotation angle between unit quaternions, accurate near 0."
    qa, qb = (torch.nn.functional.normalize(q.double(), dim=-1) for q in (qa, qb))
    qb = qb * torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1., 1.)
    return torch.rad2deg(4 * torch.asin(((qa - qb).norm(dim=-1) / 2).clamp(max=1)))


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def read_chunks(path: Path) -> np.ndarray:
    from plyfile import PlyData
    return PlyData.read(str(path))["chunk"].data


def check_errors(fmt: str, g: Gaussians, back: Gaussians, path: Path) -> None:
    "Assert each field of the round trip `g` -> file -> `back` within the format's documented error."
    order = {"splat": importance_order(g), "compressed-ply": morton_order(g)}.get(fmt)
    a = (g if order is None else g[order]).to(dtype=torch.float64)
    b = back.to(dtype=torch.float64)
    assert len(a) == len(b)
    dp, dlog = (a.means - b.means).abs(), (a.scales.log() - b.scales.log()).abs()
    rot, dop = angle_deg(a.quats, b.quats), (a.opacities - b.opacities).abs()
    col_a, col_b = (C0 * x.sh[:, 0] + 0.5 for x in (a, b))
    assert rot.max() <= ROT_BOUND_DEG[fmt], (fmt, rot.max())
    assert dop.max() <= 1 / 510 + 1e-6, (fmt, dop.max())
    if fmt == "splat":
        assert dp.max() <= 1e-6 * (1 + a.means.abs().max()) and dlog.max() <= 1e-6
        assert (col_a.clamp(0, 1) - col_b).abs().max() <= 1 / 510 + 1e-6
        assert b.sh_degree == 0
    elif fmt == "spz":
        assert dp.max() <= 2 ** -13 + 1e-6 * (1 + a.means.abs().max()), dp.max()
        assert dlog.max() <= 1 / 32 + 1e-5, dlog.max()
        assert (col_a - col_b).abs().max() <= 0.5 / (0.15 * 255) * C0 + 1e-6
        if a.sh_degree:
            d = (a.sh[:, 1:] - b.sh[:, 1:]).abs()
            assert d[:, :3].max() <= 1 / 32 + 1e-6 and d.max() <= 1 / 16 + 1e-6, d.max()
    else:  # compressed PLY: bounds relative to each chunk's range
        ch, idx = read_chunks(path), torch.arange(len(a)) // 256
        col = lambda *names: torch.tensor(np.stack([ch[n] for n in names], -1), dtype=torch.float64)[idx]
        steps = torch.tensor([2047., 1023, 2047])
        ext = col("max_x", "max_y", "max_z") - col("min_x", "min_y", "min_z")
        assert (dp <= ext / (2 * steps) + 1e-5).all(), (dp - ext / (2 * steps)).max()
        sext = col("max_scale_x", "max_scale_y", "max_scale_z") - col("min_scale_x", "min_scale_y", "min_scale_z")
        assert (dlog <= sext / (2 * steps) + 1e-5).all()
        cext = col("max_r", "max_g", "max_b") - col("min_r", "min_g", "min_b")
        assert ((col_a - col_b).abs() <= cext / 510 + 1e-5).all()
        if a.sh_degree: assert (a.sh[:, 1:] - b.sh[:, 1:]).abs().max() <= 4 / 255 + 1e-6


SCENES = {"head": lambda: head_scene(3000), "shell": lambda: shell_scene(2000, seed=3)}


@pytest.mark.parametrize("fmt", ["splat", "spz", "compressed-ply"])
@pytest.mark.parametrize("scene", list(SCENES))
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_roundtrip_within_documented_error(tmp_path, fmt, scene, degree):
    g = SCENES[scene]()
    g = with_sh(g, degree) if degree else g
    if fmt == "splat" and degree:
        with pytest.raises(ValueError, match="drop_sh=True"): save_splat(tmp_path / "x.splat", g)
        assert not list(tmp_path.iterdir())  # refused before anything was written
    p = quiet(save_splats, tmp_path / f"g{SPLAT_FORMATS[fmt]}", g, fmt, drop_sh=True)
    back = load_splats(p)
    assert back.sh_degree == (0 if fmt == "splat" else degree)
    check_errors(fmt, g, back, p)


@st.composite
def random_sets(draw):
    seed, n = draw(st.integers(0, 2 ** 31 - 1)), draw(st.integers(1, 700))
    degree = draw(st.sampled_from([0, 1, 2, 3]))
    r = torch.Generator().manual_seed(seed)
    extent = draw(st.sampled_from([0.01, 1.0, 50.0]))
    means = extent * (2 * torch.rand(n, 3, generator=r, dtype=torch.float64) - 1)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=r, dtype=torch.float64), dim=-1)
    log_s = -9 + 12 * torch.rand(n, 3, generator=r, dtype=torch.float64)  # within every format's range
    opac = torch.rand(n, generator=r, dtype=torch.float64)
    dc = (torch.rand(n, 1, 3, generator=r, dtype=torch.float64) - 0.5) / C0  # colours in [0, 1]
    rest = 0.9 * (2 * torch.rand(n, (degree + 1) ** 2 - 1, 3, generator=r, dtype=torch.float64) - 1)
    return Gaussians(means, quats, log_s.exp(), opac, torch.cat([dc, rest], 1)).to(dtype=torch.float32)


@given(random_sets(), st.sampled_from(["splat", "spz", "compressed-ply"]))
@settings(max_examples=40, deadline=None)
def test_random_sets_roundtrip(tmp_path_factory, g, fmt):
    p = quiet(save_splats, tmp_path_factory.mktemp("r") / f"g{SPLAT_FORMATS[fmt]}", g, fmt, drop_sh=True)
    check_errors(fmt, g, load_splats(p), p)


def test_files_are_deterministic(tmp_path):
    g = with_sh(head_scene(1500), 2)
    for fmt, sfx in SPLAT_FORMATS.items():
        a = quiet(save_splats, tmp_path / f"a{sfx}", g, fmt, drop_sh=True).read_bytes()
        b = quiet(save_splats, tmp_path / f"b{sfx}", g, fmt, drop_sh=True).read_bytes()
        assert a == b, fmt


# ---------------------------------------------------------------- the bytes, against the specifications
def one_gaussian(sh=None) -> Gaussians:
    return Gaussians(torch.tensor([[1., 2., 3.]]), torch.tensor([[1., 0, 0, 0]]), torch.tensor([[0.5, 0.25, 1.]]),
                     torch.tensor([0.5]), torch.zeros(1, 1, 3) if sh is None else sh)


def test_splat_bytes_and_order(tmp_path):
    rec = save_splat(tmp_path / "a.splat", one_gaussian()).read_bytes()
    assert struct.unpack("<6f", rec[:24]) == (1., 2., 3., 0.5, 0.25, 1.)
    assert tuple(rec[24:]) == (128, 128, 128, 128, 255, 128, 128, 128)  # rgb 0.5, alpha 0.5, q = (1, 0, 0, 0)
    # the order of the reference converter: -exp(s0 + s1 + s2) / (1 + exp(-opacity_logit)), ascending
    g = shell_scene(500, seed=7)
    log_s, logit = g.scales.double().log().numpy(), torch.logit(g.opacities.double()).numpy()
    ref = np.argsort(-np.exp(log_s.sum(-1)) / (1 + np.exp(-logit)), kind="stable")
    assert (importance_order(g).numpy() == ref).all()


def test_spz_bytes(tmp_path):
    "A hand-made .spz (the PLY's axes, as Niantic's ply_to_spz writes) reads back as the Gaussian it describes."
    pos = b"".join(int(v * 4096).to_bytes(3, "little", signed=True) for v in (1., 2., 3.))
    scale = bytes(round((math.log(s) + 10) * 16) for s in (0.5, 0.25, 1.))
    payload = struct.pack("<IIIBBBB", 0x5053474E, 3, 1, 0, 12, 0, 0) + pos + bytes([128]) + bytes([128] * 3) + \
        scale + struct.pack("<I", 3 << 30)  # rotation: largest = w (index 3 of x y z w), the others 0
    (tmp_path / "h.spz").write_bytes(gzip.compress(payload))
    g = load_spz(tmp_path / "h.spz")
    torch.testing.assert_close(g.means, torch.tensor([[1., 2., 3.]]))
    torch.testing.assert_close(g.quats, torch.tensor([[1., 0, 0, 0]]))
    torch.testing.assert_close(g.scales, torch.tensor([[0.5, 0.25, 1.]]), rtol=0.04, atol=0)
    assert abs(g.opacities.item() - 128 / 255) < 1e-6 and g.sh.abs().max() < 0.05
    assert gzip.decompress(save_spz(tmp_path / "o.spz", one_gaussian()).read_bytes()) == payload


def test_spz_version2_first_three(tmp_path):
    "Version 2 stores x, y, z of the quaternion (w >= 0) as u8."
    q = torch.nn.functional.normalize(torch.tensor([[0.8, 0.2, -0.3, 0.4]]), dim=-1)  # w x y z
    xyz = q[0, 1:]
    raw = bytearray(spz_payload(one_gaussian()))
    raw[4:8] = struct.pack("<I", 2)
    raw = raw[:-4] + bytes(int(round(float(v) * 127.5 + 127.5)) for v in xyz)
    (tmp_path / "v2.spz").write_bytes(gzip.compress(bytes(raw)))
    assert angle_deg(load_spz(tmp_path / "v2.spz").quats, q).max() < 1.0


def spz_v4(raw: bytes) -> bytes:
    "A version-4 container (32-byte header, table of contents, one zstd stream per attribute) of a v3 stream."
    import zstandard
    n, d = struct.unpack_from("<I", raw, 8)[0], raw[12]
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n] + ([3 * n * ((d + 1) ** 2 - 1)] if d else [])
    offsets = np.cumsum([16] + sizes)
    blocks = [raw[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    packed = [zstandard.ZstdCompressor().compress(b) for b in blocks]
    head = struct.pack("<IIIBBBBI", 0x5053474E, 4, n, d, 12, 0, len(sizes), 32) + bytes(12)
    return head + b"".join(struct.pack("<QQ", len(c), len(b)) for c, b in zip(packed, blocks)) + b"".join(packed)


def test_spz_version4(tmp_path, monkeypatch):
    pytest.importorskip("zstandard")
    g = with_sh(head_scene(800), 2)
    v3 = load_spz(save_spz(tmp_path / "g.spz", g))
    data = spz_v4(spz_payload(g))
    (tmp_path / "v4.spz").write_bytes(data)
    v4 = load_splats(tmp_path / "v4.spz")
    assert all(torch.equal(getattr(v3, k), getattr(v4, k)) for k in ("means", "quats", "scales", "opacities", "sh"))
    for cut in (20, 100, len(data) - 3):
        (tmp_path / "cut.spz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.spz"): load_spz(tmp_path / "cut.spz")
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    with pytest.raises(ImportError, match=r"facelift-nb\[spz\]"): load_spz(tmp_path / "v4.spz")


def test_compressed_ply_bytes(tmp_path):
    "A hand-made chunk/vertex pair (the PlayCanvas layout) decodes as the engine's reader does."
    import numpy as np
    from plyfile import PlyData, PlyElement
    chunk = np.zeros(1, [(n, "<f4") for n in ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z", "min_scale_x",
                                              "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y",
                                              "max_scale_z", "min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]])
    for n, v in zip(chunk.dtype.names, [0, 0, 0, 2, 4, 6, -2, -2, -2, 0, 0, 0, 0, 0, 0, 1, 1, 1]): chunk[n] = v
    vert = np.zeros(1, [(n, "<u4") for n in ["packed_position", "packed_rotation", "packed_scale", "packed_color"]])
    vert["packed_position"] = (2047 << 21) | (0 << 11) | 2047  # x = max, y = min, z = max
    vert["packed_rotation"] = (1 << 30) | (512 << 20) | (512 << 10) | 512  # largest = x (w x y z), the rest ~0
    vert["packed_scale"] = (2047 << 21) | (1023 << 11) | 0  # log-scales 0, 0, -2
    vert["packed_color"] = (255 << 24) | (0 << 16) | (255 << 8) | 255
    PlyData([PlyElement.describe(chunk, "chunk"), PlyElement.describe(vert, "vertex")], byte_order="<").write(
        str(tmp_path / "c.ply"))
    g = load_splats(tmp_path / "c.ply")
    torch.testing.assert_close(g.means, torch.tensor([[2., 0., 6.]]))
    assert angle_deg(g.quats, torch.tensor([[0., 1, 0, 0]])).max() < 0.2
    torch.testing.assert_close(g.scales, torch.tensor([[1., 1., math.exp(-2)]]))
    torch.testing.assert_close(g.colors, torch.tensor([[1., 0., 1.]]), atol=1e-6, rtol=0)
    assert g.opacities.item() == 1.


def test_compressed_ply_header_and_sh_element(tmp_path):
    g = with_sh(shell_scene(600, seed=2), 3)
    p = save_compressed_ply(tmp_path / "g.compressed.ply", g)
    head = p.read_bytes()[:2000].split(b"end_header")[0].decode()
    assert "element chunk 3\n" in head and "element vertex 600\n" in head and "element sh 600\n" in head
    assert "property uint packed_position" in head and "property uchar f_rest_44" in head
    assert "property float min_r" in head
    assert p.stat().st_size == len(head) + len("end_header\n") + 3 * 72 + 600 * (16 + 45)


def test_spz_positions_and_size(tmp_path):
    g = head_scene(2000)
    raw = spz_payload(g)
    n = len(g)
    pos = np.frombuffer(raw, np.uint8, 9 * n, 16).reshape(n, 3, 3).astype(np.int32)
    fixed = pos[..., 0] | (pos[..., 1] << 8) | (pos[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed) / 4096
    np.testing.assert_allclose(fixed, g.means.numpy(), atol=2 ** -12)  # the PLY's axes
    ply, spz = save_ply(tmp_path / "g.ply", g).stat().st_size, save_spz(tmp_path / "g.spz", g).stat().st_size
    assert spz * 10 < ply  # about 20x smaller at SH degree 0


# ---------------------------------------------------------------- refusals
WRITERS = {"splat": save_splat, "spz": save_spz, "compressed-ply": save_compressed_ply,
           "ply": lambda path, g: save_splats(path, g, "ply")}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_writers_refuse_bad_input(tmp_path, fmt):
    write, out = WRITERS[fmt], tmp_path / f"x{SPLAT_FORMATS[fmt]}"
    g = head_scene(300)
    with pytest.raises(TypeError, match="must be facelift_nb.splats.Gaussians"): write(out, {"means": g.means})
    batched = Gaussians(*(torch.stack([t, t]) for t in (g.means, g.quats, g.scales, g.opacities, g.sh)))
    with pytest.raises(ValueError, match="batch shape"): write(out, batched)
    with pytest.raises(ValueError, match="empty"): write(out, g[torch.zeros(len(g), dtype=torch.bool)])
    for field in ("means", "quats", "scales", "sh"):
        bad = head_scene(300)
        getattr(bad, field).view(-1)[5] = float("nan")  # changed in place after validation
        with pytest.raises(ValueError, match=f"`gaussians.{field}` holds 1 NaN"): write(out, bad)
    assert not list(tmp_path.iterdir())


def test_out_of_range_values_warn(tmp_path):
    g = shell_scene(100, seed=1)
    bright = Gaussians(g.means, g.quats, g.scales, g.opacities, g.sh + 3.0)  # colours above 1
    with pytest.warns(UserWarning, match=r"\.splat colour values outside \[0, 1\]"): save_splat(tmp_path / "a.splat",
                                                                                            bright)
    tiny = Gaussians(g.means, g.quats, g.scales * 1e-4, g.opacities, g.sh)  # log-scale below -10
    with pytest.warns(UserWarning, match="log-scale values outside"): save_spz(tmp_path / "a.spz", tiny)
    with pytest.raises(ValueError, match="within ±2048"):
        save_spz(tmp_path / "b.spz", Gaussians(g.means * 1e4, g.quats, g.scales, g.opacities, g.sh))


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_writers_are_atomic(tmp_path, monkeypatch, fmt):
    "A failure while writing leaves the old file as it was and no temporary file."
    import plyfile
    out = tmp_path / f"x{SPLAT_FORMATS[fmt]}"
    out.write_bytes(b"precious")
    def boom(*a, **k): raise OSError("disk full")
    monkeypatch.setattr(Path, "write_bytes", boom)
    monkeypatch.setattr(plyfile.PlyData, "write", boom)
    with pytest.raises(OSError, match="disk full"): quiet(WRITERS[fmt], out, head_scene(300))
    monkeypatch.undo()
    assert out.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_readers_refuse_broken_files(tmp_path):
    g = head_scene(600)
    good = {fmt: quiet(save_splats, tmp_path / f"g{sfx}", g, fmt) for fmt, sfx in SPLAT_FORMATS.items()}
    cases = {"cut.splat": good["splat"].read_bytes()[:-5], "empty.splat": b"",
             "nan.splat": b"\xff" * 32, "cut.spz": good["spz"].read_bytes()[:-30],
             "plain.spz": b"not gzip at all",
             "short.spz": gzip.compress(gzip.decompress(good["spz"].read_bytes())[:-1]),
             "v4.spz": struct.pack("<II", 0x5053474E, 4) + b"\0" * 24,
             "magic.spz": gzip.compress(b"\0" * 40),
             "cut.ply": good["compressed-ply"].read_bytes()[:900]}
    raw = bytearray(gzip.decompress(good["spz"].read_bytes()))
    raw[14] = 2  # flags: extensions
    cases["ext.spz"] = gzip.compress(bytes(raw))
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as e: load_splats(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg, (name, msg)
    with pytest.raises(FileNotFoundError, match="no .spz file"): load_spz(tmp_path / "missing.spz")
    with pytest.raises(ValueError, match="Use load_ply"): load_compressed_ply(save_ply(tmp_path / "p.ply", g))
    with pytest.raises(ValueError, match="must end in"): load_splats(tmp_path / "g.glb")
    assert len(load_ply(good["ply"])) == len(g) and len(load_splat(good["splat"])) == len(g)


@given(st.sampled_from(["splat", "spz", "compressed-ply"]), st.integers(0, 10 ** 6), st.integers(0, 255))
@settings(max_examples=60, deadline=None)
def test_fuzzed_files_give_gaussians_or_one_line(tmp_path_factory, fmt, where, byte):
    "Truncated or byte-flipped files: valid Gaussians or a one-line ValueError naming the file."
    d = tmp_path_factory.mktemp("f")
    data = bytearray(quiet(save_splats, d / f"g{SPLAT_FORMATS[fmt]}", shell_scene(300, seed=5), fmt).read_bytes())
    if where % 2: data = data[: where % len(data)]
    else: data[where % len(data)] = byte
    bad = d / f"bad{SPLAT_FORMATS[fmt]}"
    bad.write_bytes(bytes(data))
    try: g = quiet(load_splats, bad)
    except ValueError as e: assert bad.name in str(e) and "\n" not in str(e), str(e)
    else: assert isinstance(g, Gaussians) and torch.isfinite(g.means).all()


# ---------------------------------------------------------------- the command line
def test_cli_export_every_format(tmp_path, capsys):
    from facelift_nb.cli import main
    pytest.importorskip("trimesh")
    pytest.importorskip("skimage")
    g = head_scene(2000)
    src = save_ply(tmp_path / "g.ply", g)
    outs = {"splat": "g.splat", "spz": "g.spz", "compressed-ply": "g.compressed.ply", "ply": "copy.ply",
            "glb": "g.glb", "obj": "g.obj", "mesh-ply": "g_mesh.ply"}
    mesh_opts = ["--resolution", "32", "--views", "8", "--image-size", "64"]
    for fmt, name in outs.items():
        extra = mesh_opts if fmt in ("glb", "obj", "mesh-ply") else []
        assert quiet(main, ["export", str(src), "--format", fmt, "-o", str(tmp_path / name), *extra]) == 0, fmt
    for fmt in ("splat", "spz", "compressed-ply", "ply"):
        assert len(load_splats(tmp_path / outs[fmt])) == len(g)
    from facelift_nb.mesh import load_mesh
    for fmt in ("glb", "obj", "mesh-ply"): assert len(load_mesh(tmp_path / outs[fmt]).faces) > 100
    # from an exported file to another format, and a degree-3 set to .splat only with --drop-sh
    assert main(["export", str(tmp_path / "g.spz"), "--format", "splat", "-o", str(tmp_path / "b.splat")]) == 0
    save_ply(tmp_path / "sh3.ply", with_sh(g, 3))
    assert main(["export", str(tmp_path / "sh3.ply"), "--format", "splat", "-o", str(tmp_path / "c.splat")]) == 2
    assert "drop_sh=True" in capsys.readouterr().err and not (tmp_path / "c.splat").exists()
    assert main(["export", str(tmp_path / "sh3.ply"), "--format", "splat", "-o", str(tmp_path / "c.splat"),
                 "--drop-sh"]) == 0
