"""Bad input everywhere: every reader and every CLI verb turns broken files into one clear line.

Byte-level fuzz (truncations, byte flips) and structured fuzz (random JSON values) with hypothesis, plus the
hand-made cases users actually hit. A reader either returns a valid object or raises ValueError / TypeError /
FileNotFoundError whose message is one line naming the file; the CLI prints that line, exits 2 and changes nothing.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import Cameras, from_blender, from_colmap, orbit, to_colmap
from facelift_nb.cli import main
from facelift_nb.io import atomic_folder, atomic_path, load_image, make_temp_dir, read_yaml_config, write_text_atomic
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.models.mvdiffusion import load_prompt_embeds
from facelift_nb.pipeline import load_gslrm
from facelift_nb.splats import Gaussians, load_ply, save_ply
from facelift_nb.train.gslrm import GSLRMTrainConfig
from facelift_nb.train.mvdiffusion import MVTrainConfig

USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
LIB = Path(__file__).resolve().parents[1] / "facelift_nb"


def assert_clear(fn, path, *, contains=None):
    "`fn()` raises a user error whose message is one line naming `path`."
    with pytest.raises(USER_ERRORS) as e: fn()
    msg = str(e.value)
    assert msg and "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert Path(path).name in msg, f"the message does not name {Path(path).name}: {msg!r}"
    if contains: assert contains in msg, msg
    return msg


def valid_or_clear(fn, path):
    "`fn()` either succeeds or raises a clear one-line error naming `path`; returns the result or None."
    try: return fn()
    except USER_ERRORS as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip() and Path(path).name in msg, f"unclear error: {type(e).__name__}: {msg!r}"
        return None


def scratch(tmp_path_factory, name):
    "A fresh folder per hypothesis example (function-scoped tmp_path is shared across examples)."
    return tmp_path_factory.mktemp(name)


# ---------------------------------------------------------------- PLY
@pytest.fixture(scope="module")
def ply_bytes(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    n = 5
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    gs = Gaussians(torch.randn(n, 3, generator=g), quats, torch.rand(n, 3, generator=g) * 0.1 + 0.01,
                   torch.rand(n, generator=g) * 0.9 + 0.05, torch.randn(n, 4, 3, generator=g) * 0.2)
    return save_ply(tmp_path_factory.mktemp("ply") / "g.ply", gs).read_bytes()


def _ply_header(props, n, fmt="binary_little_endian"):
    return (f"ply\nformat {fmt} 1.0\nelement vertex {n}\n" + "".join(f"property {t} {p}\n" for t, p in props)
            + "end_header\n").encode()


NEED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
        "rot_0", "rot_1", "rot_2", "rot_3"]


def test_ply_hand_made_cases(tmp_path, ply_bytes):
    p = tmp_path / "bad.ply"
    cases = {
        "truncated": ply_bytes[: len(ply_bytes) // 2],
        "header only": ply_bytes[: ply_bytes.index(b"end_header") + 11][:-1],
        "random": bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "empty": b"",
        "ascii garbage": _ply_header([("float", q) for q in NEED], 1, "ascii") + b"1 2 three\n",
        "missing properties": _ply_header([("float", "x"), ("float", "y"), ("float", "z")], 1)
        + np.zeros(3, "<f4").tobytes(),
        "zero vertices": _ply_header([("float", q) for q in NEED], 0),
        "nan values": _ply_header([("float", q) for q in NEED], 1) + np.full(len(NEED), np.nan, "<f4").tobytes(),
        "list property": _ply_header([("float", q) for q in NEED[:-1]], 1).replace(
            b"end_header", b"property list uchar float rot_3\nend_header")
        + np.ones(len(NEED) - 1, "<f4").tobytes() + b"\x01" + np.ones(1, "<f4").tobytes(),
        "no vertex element": b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\n"
                             b"end_header\n",
    }
    for name, data in cases.items():
        p.write_bytes(data)
        assert_clear(lambda: load_ply(p), p)
    assert_clear(lambda: load_ply(tmp_path / "missing.ply"), tmp_path / "missing.ply")


def test_ply_ascii_and_wrong_types_load_when_valid(tmp_path):
    "An ASCII PLY or one with double/int properties is a valid file: it loads (or says clearly why not)."
    vals = [0., 0., 0., .1, .2, .3, 0., -3., -3., -3., 1., 0., 0., 0.]
    p = tmp_path / "ascii.ply"
    p.write_bytes(_ply_header([("float", q) for q in NEED], 1, "ascii") + (" ".join(map(str, vals)) + "\n").encode())
    assert len(load_ply(p)) == 1
    p.write_bytes(_ply_header([("double" if i % 2 else "int", q) for i, q in enumerate(NEED)], 1)
                  + b"".join(struct.pack("<d" if i % 2 else "<i", v if i % 2 else int(v)) for i, v in enumerate(vals)))
    valid_or_clear(lambda: load_ply(p), p)


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6))
def test_ply_fuzz(tmp_path_factory, ply_bytes, cut, flips):
    d = scratch(tmp_path_factory, "plyfuzz")
    b = bytearray(ply_bytes)
    for pos, val in flips: b[int(pos * len(b))] = val
    for data in (bytes(b), ply_bytes[: int(cut * len(ply_bytes))]):
        p = d / "f.ply"
        p.write_bytes(data)
        g = valid_or_clear(lambda: load_ply(p), p)
        if g is not None: assert all(torch.isfinite(t).all() for t in (g.means, g.scales, g.quats, g.opacities, g.sh))


# ---------------------------------------------------------------- cameras
@pytest.fixture(scope="module")
def cams():
    return orbit([0., 90., 180., 270.], hw=(64, 64), names=["f", "r", "b", "l"])


@pytest.fixture(scope="module")
def cam_json(cams, tmp_path_factory):
    p = cams.to_facelift_json(tmp_path_factory.mktemp("cam") / "opencv_cameras.json")
    return json.loads(p.read_text())


def test_camera_json_hand_made_cases(tmp_path, cam_json):
    p = tmp_path / "opencv_cameras.json"
    def frame(**kw):
        fr = dict(cam_json["frames"][0], **kw)
        return json.dumps({"frames": [{k: v for k, v in fr.items() if v is not None}]})
    cases = [b"not json", b"\xff\xfe\x00garbage", b"[]", b"{}", b'{"frames": []}', b'{"frames": "x"}',
             b'{"frames": [1]}', frame(w2c=None), frame(w=None), frame(w2c=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
             frame(w2c=[[1, 0, 0, 0]] * 4),
             frame(w2c="eye"), frame(fx="500"), frame(w=64.5), frame(w=True), frame(h=-1), frame(fx=float("nan")),
             frame(cx=float("inf")), frame(w=float("inf")), frame(h=float("nan")), frame(w=1e400),
             frame(w2c=[[float("nan")] * 4] * 4), frame(w2c=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]),
             frame(fx=-5.0)]
    for data in cases:
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        assert_clear(lambda: Cameras.from_facelift_json(p), p)
    assert_clear(lambda: Cameras.from_facelift_json(tmp_path / "nope.json"), tmp_path / "nope.json")


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                           max_leaves=20)


@FUZZ
@given(key=st.sampled_from(["w", "h", "fx", "fy", "cx", "cy", "w2c", "frames", "id"]), value=json_values)
def test_camera_json_fuzz(tmp_path_factory, cam_json, key, value):
    d = scratch(tmp_path_factory, "camfuzz")
    data = json.loads(json.dumps(cam_json))
    if key in ("frames", "id"): data[key] = value
    else: data["frames"][1][key] = value
    p = d / "opencv_cameras.json"
    p.write_text(json.dumps(data))
    valid_or_clear(lambda: Cameras.from_facelift_json(p), p)


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4))
def test_camera_json_byte_fuzz(tmp_path_factory, cams, cut, flips):
    d = scratch(tmp_path_factory, "cambytes")
    raw = cams.to_facelift_json(d / "ok.json").read_bytes()
    b = bytearray(raw)
    for pos, val in flips: b[int(pos * len(b))] = val
    p = d / "opencv_cameras.json"
    for data in (bytes(b), raw[: int(cut * len(raw))]):
        p.write_bytes(data)
        valid_or_clear(lambda: Cameras.from_facelift_json(p), p)


def test_colmap_hand_made_cases(tmp_path, cams):
    good = to_colmap(cams, tmp_path / "good")
    cams_txt, imgs_txt = (good / "cameras.txt").read_text(), (good / "images.txt").read_text()
    first_img = next(l for l in imgs_txt.splitlines() if l and not l.startswith("#"))
    cases = {"cameras.txt": ["1 PINHOLE 64\n", "1 FISHEYE 64 64 1 2 3 4\n", "1 PINHOLE 64 64 1 2 3\n",
                             "1 PINHOLE 64 64 a b c d\n", "1 PINHOLE 64 64 nan 50 32 32\n",
                             "1 PINHOLE 64 64 -50 50 32 32\n", "1 PINHOLE 0 64 50 50 32 32\n", "\xff"],
             "images.txt": ["1 1 0 0\n\n", "1 0 0 0 0 0 0 0 1 a.png\n\n", "1 1 0 0 0 0 0 0 7 a.png\n\n",
                            "1 x 0 0 0 0 0 0 1 a.png\n\n", "1 nan 0 0 0 0 0 0 1 a.png\n\n",
                            "1 1 0 0 0 inf 0 0 1 a.png\n\n", "", first_img.replace(" 1 ", " 9 ", 1)]}
    for fname, texts in cases.items():
        for text in texts:
            d = tmp_path / "m"
            d.mkdir(exist_ok=True)
            (d / "cameras.txt").write_text(cams_txt)
            (d / "images.txt").write_text(imgs_txt)
            if text == "\xff": (d / fname).write_bytes(b"\xff\xfe")
            else: (d / fname).write_text(text)
            assert_clear(lambda: from_colmap(d), d / fname)
    (tmp_path / "m" / "images.txt").unlink()
    assert_clear(lambda: from_colmap(tmp_path / "m"), tmp_path / "m" / "images.txt")


def test_blender_parameters():
    eye = torch.eye(4)[None]
    for bad in (dict(matrix_world=torch.eye(3)[None]), dict(matrix_world="eye"), dict(lens_mm=float("nan")),
                dict(lens_mm=-5.), dict(matrix_world=torch.full((1, 4, 4), float("nan"))), dict(sensor_fit="DIAGONAL"),
                dict(sensor_mm=0.), dict(hw=(0, 64))):
        kw = dict(matrix_world=eye, lens_mm=50., hw=(64, 64)) | bad
        with pytest.raises((ValueError, TypeError)) as e: from_blender(**kw)
        assert "\n" not in str(e.value).strip()


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    sd = GSLRM(**GSLRM.tiny_config()).state_dict()
    torch.save({"model": sd}, d / "ok.pt")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "ok.safetensors"))
    return d, sd


class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned > /dev/null",))


def _load(p): return GSLRM.from_facelift_checkpoint(p, config=GSLRM.tiny_config())


def test_checkpoint_hand_made_cases(tmp_path, ckpt):
    d, sd = ckpt
    assert len(_load(d / "ok.pt").state_dict()) == len(sd) and len(_load(d / "ok.safetensors").state_dict()) == len(sd)
    k0 = next(k for k, v in sd.items() if v.ndim == 2)
    cases = {
        "trunc.pt": (d / "ok.pt").read_bytes()[:5000],
        "trunc.safetensors": (d / "ok.safetensors").read_bytes()[:5000],
        "header.safetensors": (d / "ok.safetensors").read_bytes()[:6],
        "random.pt": bytes(range(256)) * 4,
        "random.safetensors": bytes(range(256)) * 4,
        "empty.pt": b"",
    }
    buf = io.BytesIO()
    torch.save({"model": {**sd, k0: sd[k0].long()}}, buf)
    cases["int_dtype.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"model": {**sd, k0: sd[k0][:1]}}, buf)
    cases["shape.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"model": {k: v for k, v in sd.items() if k != k0}}, buf)
    cases["missing.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"model": {**sd, k0: torch.full_like(sd[k0], float("nan"))}}, buf)
    cases["nan.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    cases["list.pt"] = buf.getvalue()
    cases["evil.pt"] = pickle.dumps({"model": _Evil()})
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert_clear(lambda: _load(p), p)
        assert_clear(lambda: load_gslrm(p, config=GSLRM.tiny_config()), p)
    assert_clear(lambda: _load(tmp_path / "none.pt"), tmp_path / "none.pt")


def test_the_pickle_with_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"model": Evil()}))
    assert_clear(lambda: _load(p), p)
    # what the library turns into its error
    with pytest.raises(pickle.UnpicklingError): torch.load(p, weights_only=True)
    assert not marker.exists()


def test_nothing_loads_with_weights_only_false():
    "Every torch.load call in the library passes weights_only=True (read from the syntax tree, so split calls count)."
    import ast
    calls = 0
    for f in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("weights_only") == "True", f"{f.name}:{node.lineno}: {ast.unparse(node)}"
    assert calls > 0  # the check saw the library's loads


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), which=st.sampled_from(["ok.pt", "ok.safetensors"]))
def test_checkpoint_truncation_fuzz(tmp_path_factory, ckpt, cut, which):
    d, _ = ckpt
    raw = (d / which).read_bytes()
    p = scratch(tmp_path_factory, "ckfuzz") / which
    p.write_bytes(raw[: int(cut * len(raw))])
    assert_clear(lambda: _load(p), p)


def test_inspect_checkpoint_reports_broken_files(tmp_path, ckpt):
    from facelift_nb.checkpoints import inspect_checkpoint
    d, _ = ckpt
    for name in ("ok.pt", "ok.safetensors"):
        p = tmp_path / name
        p.write_bytes((d / name).read_bytes()[:3000])
        info = inspect_checkpoint(p)
        assert not info.ok and info.problems


# ---------------------------------------------------------------- images
def _png_header(w, h, bit_depth=8, color=6):
    "A PNG whose IHDR claims w x h; only the header and an empty IDAT: no pixel memory is ever needed."
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def png_bytes():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 4), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_image_hand_made_cases(tmp_path, png_bytes):
    from PIL import Image
    p = tmp_path / "bad.png"
    cases = {"truncated": png_bytes[: len(png_bytes) // 2], "random": bytes(range(256)), "empty": b"",
             "text": b"hello, world\n", "bomb": _png_header(30000, 30000), "bomb_warning": _png_header(10000, 10000)}
    for name, data in cases.items():
        p.write_bytes(data)
        msg = assert_clear(lambda: load_image(p), p)
        if name.startswith("bomb"): assert "too large" in msg and "pixels" in msg, msg
    Image.new("RGB", (1, 1)).save(p)
    assert_clear(lambda: load_image(p), p, contains="1x1")
    jpg = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 80), (0, 255, 0, 0)).save(jpg)
    assert_clear(lambda: load_image(jpg), jpg, contains="CMYK")
    assert_clear(lambda: load_image(tmp_path / "none.png"), tmp_path / "none.png")


def test_16_bit_png_keeps_its_range(tmp_path):
    from PIL import Image
    p = tmp_path / "deep.png"
    a = np.linspace(0, 65535, 80 * 80).reshape(80, 80).astype(np.uint16)
    Image.fromarray(a).save(p)
    x = load_image(p)
    assert x.shape == (1, 80, 80) and abs(x.max().item() - 1) < 1e-3 and abs(x.mean().item() - 0.5) < 0.01


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4))
def test_image_fuzz(tmp_path_factory, png_bytes, cut, flips):
    p = scratch(tmp_path_factory, "imfuzz") / "f.png"
    b = bytearray(png_bytes)
    for pos, val in flips: b[int(pos * len(b))] = val
    for data in (bytes(b), png_bytes[: int(cut * len(png_bytes))]):
        p.write_bytes(data)
        valid_or_clear(lambda: load_image(p), p)


# ---------------------------------------------------------------- YAML configs
@pytest.mark.parametrize("cls,base", [(GSLRMTrainConfig, "data: d\noutput_dir: o\n"),
                                      (MVTrainConfig, "data: d\noutput_dir: o\npretrained: p\n")])
def test_yaml_configs(tmp_path, cls, base):
    p = tmp_path / "c.yaml"
    p.write_text(base + "max_steps: 3\n")
    assert read_yaml_config(cls, p).max_steps == 3 and cls.from_yaml(p).max_steps == 3
    for text in ["- a\n- b\n", "just a string\n", "42\n", base + "learning_rate: 1\n", base + "max_steps: ten\n",
                 base + "max_steps: 1.5\n", base + "lr: fast\n", base + "resume: 3\n", base + "mixed_precision: no\n",
                 base + "seed: [1]\n",
                 base + "max_steps: 0\n", "data: [unclosed\n", "output_dir: o\n", "{a: 1}: 2\n"]:
        p.write_text(text)
        assert_clear(lambda: cls.from_yaml(p), p)
    p.write_bytes(b"\xff\xfe\x00")
    assert_clear(lambda: cls.from_yaml(p), p)
    assert_clear(lambda: cls.from_yaml(tmp_path / "none.yaml"), tmp_path / "none.yaml")


@FUZZ
@given(key=st.sampled_from(["max_steps", "lr", "betas", "resume", "mixed_precision", "model_config", "input_views",
                            "bg"]),
       value=json_values)
def test_yaml_fuzz(tmp_path_factory, key, value):
    p = scratch(tmp_path_factory, "yamlfuzz") / "c.yaml"
    p.write_text("data: d\noutput_dir: o\n" + f"{key}: {json.dumps(value)}\n")
    valid_or_clear(lambda: GSLRMTrainConfig.from_yaml(p), p)


# ---------------------------------------------------------------- prompt embeddings
def test_prompt_embeddings(tmp_path):
    p = tmp_path / "clr_embeds.pt"
    torch.save(torch.randn(6, 77, 16), p)
    assert load_prompt_embeds(p, layout="facelift6").shape == (6, 77, 16)
    good = p.read_bytes()
    cases = [torch.randn(6, 76, 16), torch.randn(77, 16), torch.randint(0, 9, (6, 77, 16)),
             torch.randn(6, 77, 16).bool(), torch.randn(5, 77, 16), {"embeds": torch.randn(6, 77, 16)}, [1, 2],
             torch.full((6, 77, 16), float("nan"))]
    for obj in cases:
        torch.save(obj, p)
        assert_clear(lambda: load_prompt_embeds(p, layout="facelift6"), p)
    for data in (good[:100], good[: len(good) // 2], b"", pickle.dumps(_Evil()), b"not a tensor"):
        p.write_bytes(data)
        assert_clear(lambda: load_prompt_embeds(p), p)
    assert_clear(lambda: load_prompt_embeds(tmp_path / "none.pt"), tmp_path / "none.pt")


# ---------------------------------------------------------------- atomic writers and the umask
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_and_folders_respect_the_umask(tmp_path, umask, cams):
    old = os.umask(umask)
    try:
        f = write_text_atomic(tmp_path / "a.txt", "x")
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask
        with atomic_path(tmp_path / "b.bin") as t: t.write_bytes(b"1")
        assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o666 & ~umask
        c = cams.to_facelift_json(tmp_path / "cams.json")
        assert c.stat().st_mode & 0o777 == 0o666 & ~umask
        d = make_temp_dir(tmp_path, ".x.tmp-")
        assert d.stat().st_mode & 0o777 == 0o777 & ~umask
        with atomic_folder(tmp_path / "ck") as t: (t / "w.txt").write_text("1")
        assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o777 & ~umask
        # a rename keeps the semantics: the old file is replaced whole, no temporary file is left
        write_text_atomic(tmp_path / "a.txt", "y")
        assert (tmp_path / "a.txt").read_text() == "y" and not list(tmp_path.glob(".a.txt.tmp-*"))
    finally:
        os.umask(old)
    assert os.umask(old) == old


def test_no_private_temp_writers_left():
    "Every mkstemp/mkdtemp in the library goes through facelift_nb.io, which fixes the permissions."
    for f in LIB.rglob("*.py"):
        if f.name in ("io.py", "_modidx.py"): continue
        src = f.read_text()
        assert "mkstemp(" not in src and "mkdtemp(" not in src and "NamedTemporaryFile(" not in src, f


# ---------------------------------------------------------------- the CLI
def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def bad_files(tmp_path, ply_bytes, png_bytes, cams):
    b = tmp_path / "bad"
    b.mkdir()
    (b / "trunc.ply").write_bytes(ply_bytes[:300])
    (b / "cams.json").write_text('{"frames": [{"w": 64}]}')
    (b / "trunc.png").write_bytes(png_bytes[:200])
    (b / "bomb.png").write_bytes(_png_header(30000, 30000))
    (b / "list.yaml").write_text("- a\n")
    (b / "wrong.yaml").write_text("data: d\noutput_dir: o\nmax_steps: ten\n")
    (b / "views").mkdir()
    good = cams.to_facelift_json(b / "views" / "cameras.json")
    for i in range(4): (b / "views" / f"cam_{i:03d}.png").write_bytes(png_bytes[:100])
    (b / "ck.pt").write_bytes(b"garbage")
    (b / "colmap").mkdir()
    (b / "colmap" / "cameras.txt").write_text("1 PINHOLE 64\n")
    (b / "colmap" / "images.txt").write_text("")
    return b, good


def cli_cases(b, good, out):
    "One or more wrong inputs for every verb of `facelift-nb --help`."
    return [
        ["render", str(b / "trunc.ply"), "-o", str(out / "r")],
        ["render", str(b / "missing.ply"), "-o", str(out / "r")],
        ["render", str(b / "trunc.ply"), "-o", str(out / "existing"), "--overwrite"],
        ["render", str(b / "trunc.ply"), "-o", str(out / "existing")],
        ["run", str(b / "trunc.png"), "-o", str(out / "run"), "--default"],
        ["run", str(b / "bomb.png"), "-o", str(out / "run"), "--default"],
        ["run", str(b / "trunc.png"), "-o", str(out / "existing"), "--default", "--overwrite"],
        ["run", str(b / "missing.png"), "-o", str(out / "run"), "--default"],
        ["run", str(b / "trunc.png"), "-o", str(out / "run"), "--weights", str(b / "nope"), str(b / "ck.pt")],
        ["reconstruct", str(b / "views"), "--cameras", str(b / "cams.json"), "-o", str(out / "rc"), "--default"],
        ["reconstruct", str(b / "views"), "--cameras", str(good), "-o", str(out / "rc"), "--default"],
        ["reconstruct", str(b / "views"), "--cameras", str(good), "-o", str(out / "rc"), "--gslrm", str(b / "ck.pt")],
        ["checkpoints", str(b / "missing")],
        ["checkpoints", str(b / "ck.pt")],
        ["demo", "-o", str(out / "demo"), "--image", str(b / "trunc.png")],
        ["demo", "-o", str(out / "existing")],
        ["check-cameras", str(b / "cams.json")],
        ["check-cameras", str(b / "colmap")],
        ["check-cameras", str(b / "missing.json")],
        ["convert-cameras", str(b / "cams.json"), "-o", str(out / "c.json"), "--to", "transforms"],
        ["convert-cameras", str(b / "colmap"), "-o", str(out / "c.json"), "--to", "opencv_json"],
        ["convert-cameras", str(b / "missing.json"), "-o", str(out / "c.json"), "--to", "colmap"],
        ["convert-cameras", str(good), "-o", str(out / "existing"), "--to", "colmap-bin"],
        ["convert-cameras", str(good), "-o", str(out / "c.json"), "--to", "ply"],
        ["check-data", str(b / "missing")],
        ["check-data", str(b / "views")],
        ["layouts", "extra-arg"],
        ["train-gslrm", str(b / "list.yaml")],
        ["train-gslrm", str(b / "wrong.yaml")],
        ["train-gslrm", str(b / "missing.yaml")],
        ["train-mvdiffusion", str(b / "list.yaml")],
        ["train-mvdiffusion", str(b / "wrong.yaml")],
        ["render", "--size", "big", str(b / "trunc.ply"), "-o", str(out / "r")],
        ["export", str(b / "trunc.ply"), "-o", str(out / "g.spz"), "--format", "spz"],
        ["export", str(b / "missing.ply"), "-o", str(out / "g.splat"), "--format", "splat"],
        ["export", str(b / "trunc.ply"), "-o", str(out / "g.obj"), "--format", "glb"],
        ["sequence", str(b / "views"), str(b / "views"), "-o", str(out / "seq"), "--default"],
        ["sequence", "--cameras", str(b / "cams.json"), "-o", str(out / "seq"), "--default"],
        ["sequence", str(b / "views"), "-o", str(out / "seq"), "--default", "--fps", "10"],
        ["sequence", str(b / "views"), "-o", str(out / "existing"), "--default"],
        ["export", str(b / "trunc.ply"), "-o", str(out / "g.fbx"), "--format", "fbx"],
        ["layout-study", str(b / "missing"), "--default", "-o", str(out / "ls")],
        ["layout-study", "--default", "--layouts", "uniform4", str(b / "cams.json"), "-o", str(out / "ls")],
        ["layout-study", "--default", "-o", str(out / "existing")],
        ["layout-study", str(b / "views"), "--gslrm", str(b / "ck.pt"), "-o", str(out / "ls")],
        ["layout-study", "--default", "--subjects", "0", "-o", str(out / "ls")],
    ]


def test_every_verb_is_covered():
    from facelift_nb.cli import _parser
    verbs = set(_parser()._subparsers._group_actions[0].choices)
    covered = {c[0] for c in cli_cases(Path("b"), Path("g"), Path("o"))}
    assert verbs <= covered, f"verbs without a bad-input case: {sorted(verbs - covered)}"


def test_cli_bad_input_in_process(bad_files, tmp_path, capsys):
    b, good = bad_files
    out = tmp_path / "out"
    (out / "existing").mkdir(parents=True)
    (out / "existing" / "keep.txt").write_text("precious")
    before = snapshot(tmp_path)
    for argv in cli_cases(b, good, out):
        try: rc = main(argv)
        except SystemExit as e: rc = e.code  # argparse
        err = capsys.readouterr().err
        assert rc == 2, (argv, rc, err)
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1 and "Traceback" not in err and "error" in lines[0], (argv, err)
        assert snapshot(tmp_path) == before, f"{argv} changed files"


def test_cli_bad_input_subprocess_has_no_traceback(bad_files, tmp_path):
    b, good = bad_files
    out = tmp_path / "out"
    for argv in (["render", str(b / "trunc.ply"), "-o", str(out / "r")],
                 ["run", str(b / "bomb.png"), "-o", str(out / "x"), "--default"],
                 ["train-gslrm", str(b / "wrong.yaml")]):
        r = subprocess.run([sys.executable, "-m", "facelift_nb", *argv], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("facelift-nb"), r.stderr
        assert not out.exists()


def test_demo_takes_output_like_every_verb():
    from facelift_nb.cli import _parser
    p = _parser()
    assert p.parse_args(["demo", "-o", "x"]).output == "x" and p.parse_args(["demo", "--output", "y"]).output == "y"
    assert p.parse_args(["demo", "--out", "z"]).output == "z"  # the old spelling still works
    assert "--out " not in p._subparsers._group_actions[0].choices["demo"].format_help()


def test_yaml_float_without_a_dot(tmp_path):
    "YAML 1.1 reads `lr: 1e-4` as a string; a float field takes it as the number."
    from facelift_nb.io import read_yaml_config
    from facelift_nb.train.gslrm import GSLRMTrainConfig
    (tmp_path / "c.yaml").write_text("data: x\noutput_dir: y\nlr: 1e-4\n")
    assert read_yaml_config(GSLRMTrainConfig, tmp_path / "c.yaml").lr == 1e-4
    (tmp_path / "c.yaml").write_text("data: x\noutput_dir: y\nlr: fast\n")
    with pytest.raises(TypeError, match="`lr` must be"):
        read_yaml_config(GSLRMTrainConfig, tmp_path / "c.yaml")
