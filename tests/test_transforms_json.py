"""transforms.json (nerfstudio, instant-ngp): the documented format, round trips, property tests, every error path."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import Cameras, orbit, published_cameras_path
from facelift_nb.transforms_json import read_transforms_json, write_transforms_json

GL = np.diag([1., -1., -1., 1.])


def _frame(path="images/frame_00001.png", m=None, **keys):
    return {"file_path": path, "transform_matrix": (np.eye(4) if m is None else np.asarray(m)).tolist(), **keys}


def _write(tmp_path, doc, name="transforms.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def _same_file(a: dict, b: dict, atol=1e-12):
    "Two transforms.json documents are equal: every key exactly, the matrices to `atol`."
    fa, fb = a.pop("frames"), b.pop("frames")
    assert a == b
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        x, y = dict(x), dict(y)
        np.testing.assert_allclose(x.pop("transform_matrix"), y.pop("transform_matrix"), atol=atol, rtol=0)
        assert x == y


# ---------------------------------------------------------------- the documented format, in nerfstudio's conventions

# A camera at (2, 0, 0) in a Z-up world, looking at the origin (along -X) with +Z up in its image. The OpenGL
# camera-to-world matrix has the columns x = right = (0, 1, 0), y = up = (0, 0, 1), z = back = (1, 0, 0), centre.
DOC_C2W = [[0., 0., 1., 2.], [1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 0., 1.]]
NERFSTUDIO_DOC = {
    "camera_model": "OPENCV", "fl_x": 1072.0, "fl_y": 1068.0, "cx": 1504.0, "cy": 1000.0, "w": 3008, "h": 2000,
    "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
    "frames": [{"file_path": "images/frame_00001.jpeg", "transform_matrix": DOC_C2W}],
}


def test_documented_nerfstudio_file_gives_the_known_camera(tmp_path):
    cams = Cameras.from_transforms_json(_write(tmp_path, NERFSTUDIO_DOC), dtype=torch.float64)
    assert cams.hw == (2000, 3008) and cams.names == ("images/frame_00001.jpeg",)
    torch.testing.assert_close(cams.K[0], torch.tensor([[1072., 0, 1504], [0, 1068., 1000], [0, 0, 1]],
                                                       dtype=torch.float64))
    c2w = cams.c2w[0]
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([2., 0, 0], dtype=torch.float64))  # centre
    torch.testing.assert_close(c2w[:3, 2], torch.tensor([-1., 0, 0], dtype=torch.float64))  # looks at the origin
    torch.testing.assert_close(-c2w[:3, 1], torch.tensor([0., 0, 1], dtype=torch.float64))  # image up = world +Z
    w2c = cams.w2c[0]
    torch.testing.assert_close(w2c, torch.tensor([[0., 1, 0, 0], [0, 0, -1, 0], [-1, 0, 0, 2], [0, 0, 0, 1]],
                                                 dtype=torch.float64))
    # the origin projects to the principal point, a point above it to a smaller image row (up in the image)
    for X, check in (((0., 0, 0), lambda u, v: abs(u - 1504) < 1e-9 and abs(v - 1000) < 1e-9),
                     ((0., 0, 0.5), lambda u, v: abs(u - 1504) < 1e-9 and v < 1000),
                     ((0., 0.5, 0), lambda u, v: u > 1504)):  # +Y is the camera's right
        x = cams.K[0] @ (w2c[:3, :3] @ torch.tensor(X, dtype=torch.float64) + w2c[:3, 3])
        assert check((x[0] / x[2]).item(), (x[1] / x[2]).item())


def test_written_file_is_opengl_c2w(tmp_path):
    rig = orbit([0., 90., 200.], elevation_deg=[0., 20., -10.], dtype=torch.float64)
    doc = json.loads(rig.to_transforms_json(tmp_path / "t.json").read_text())
    for fr, c2w_cv in zip(doc["frames"], rig.c2w):
        m = np.array(fr["transform_matrix"])
        np.testing.assert_allclose(m[3], [0, 0, 0, 1], atol=0)
        np.testing.assert_allclose(m[:3, 3], c2w_cv[:3, 3].numpy(), atol=1e-12)
        to_subject = -m[:3, 3] / np.linalg.norm(m[:3, 3])  # the rig looks at the origin
        np.testing.assert_allclose(-m[:3, 2], to_subject, atol=1e-12)  # the camera looks down -z of its matrix
        np.testing.assert_allclose(m[:3, 1], -c2w_cv[:3, 1].numpy(), atol=1e-12)  # y up
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(doc)  # the keys nerfstudio's reader needs


# ---------------------------------------------------------------- round trips

def test_raw_round_trip_keeps_every_key(tmp_path):
    doc = {**NERFSTUDIO_DOC, "k1": 0.03, "applied_transform": np.eye(4)[:3].tolist(), "ply_file_path": "sparse.ply",
           "frames": [_frame("b.png", DOC_C2W, mask_path="masks/b.png"), _frame("a.png", depth_file_path="d/a.png",
                                                                                 fl_x=900.0)]}
    tf = read_transforms_json(_write(tmp_path, doc))
    assert [f.file_path for f in tf.frames] == ["b.png", "a.png"]  # file order, not sorted
    assert read_transforms_json(write_transforms_json(tf, tmp_path / "again.json")).to_dict() == doc


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_transforms_cameras_opencv_json_transforms_lossless(tmp_path, dtype, atol):
    doc = {**NERFSTUDIO_DOC, "k1": 0.03, "k2": -0.01, "applied_transform": np.eye(4)[[0, 2, 1]][:3].tolist(),
           "ply_file_path": "sparse_pc.ply", "aabb_scale": 16, "custom": {"any": [1, 2]},
           "frames": [_frame("images/b.png", DOC_C2W, mask_path="masks/b.png", colmap_im_id=2),
                      _frame("images/a.png", fl_x=1100.0, k1=0.05, depth_file_path="depths/a.png")]}
    src = _write(tmp_path, doc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cams = Cameras.from_transforms_json(src, dtype=dtype)
        assert cams.names == ("images/b.png", "images/a.png")
        assert cams.meta[1]["camera_overrides"] == {"fl_x": 1100.0, "k1": 0.05}
        assert cams.rig_meta["aabb_scale"] == 16 and cams.rig_meta["custom"] == {"any": [1, 2]}
        direct = json.loads(cams.to_transforms_json(tmp_path / "direct.json").read_text())
        via = Cameras.from_facelift_json(cams.to_facelift_json(tmp_path / "opencv_cameras.json"), dtype=dtype)
        assert via.rig_meta == cams.rig_meta and via.meta == cams.meta and via.names is None
        again = json.loads(via.to_transforms_json(tmp_path / "via.json").read_text())
    _same_file(direct, json.loads(json.dumps(doc)), atol)
    _same_file(again, json.loads(json.dumps(doc)), atol)


def test_opencv_json_without_file_keys_is_unchanged(tmp_path):
    cams = Cameras.from_facelift_json(published_cameras_path())
    assert cams.rig_meta is None
    out = cams.to_facelift_json(tmp_path / "a.json").read_text()
    assert list(json.loads(out)) == ["id", "frames"]
    back = Cameras.from_transforms_json(cams.to_transforms_json(tmp_path / "t.json"))
    torch.testing.assert_close(back.w2c, cams.w2c, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.K, cams.K)
    assert back.meta == tuple({**m, "file_path": m.get("file_path", f"view_{i:03d}.png")} for i, m in
                              enumerate(cams.meta))
    assert back.rig_id is None  # a transforms.json has no rig id


def test_rig_meta_is_carried_by_view_edits(tmp_path):
    cams = Cameras.from_transforms_json(_write(tmp_path, {**NERFSTUDIO_DOC, "aabb_scale": 4, "frames": [
        _frame("a.png", DOC_C2W), _frame("b.png", DOC_C2W)]}))
    for edited in (cams[1], cams.resize((1000, 1504)), cams.crop((0, 0, 3000, 2000)), cams.to(dtype=torch.float64)):
        assert edited.rig_meta == cams.rig_meta
    assert Cameras.stack([cams, cams]).rig_meta == cams.rig_meta
    assert Cameras.stack([cams, Cameras(cams.K, cams.w2c, cams.hw)]).rig_meta is None  # rigs disagree
    with pytest.raises(ValueError, match="must not hold the keys 'id' or 'frames'"):
        Cameras(cams.K, cams.w2c, cams.hw, rig_meta={"frames": []})


def test_edited_cameras_get_a_fresh_layout(tmp_path):
    src = _write(tmp_path, {**NERFSTUDIO_DOC, "camera_angle_x": 2 * math.atan(3008 / 2 / 1072.0), "frames": [
        _frame("a.png", DOC_C2W), _frame("b.png", DOC_C2W, fl_x=1100.0)]})
    cams = Cameras.from_transforms_json(src, dtype=torch.float64)
    doc = json.loads(cams.resize((1000, 1504)).to_transforms_json(tmp_path / "small.json").read_text())
    assert (doc["w"], doc["h"], doc["cx"], doc["fl_y"]) == (1504, 1000, 752.0, 534.0)
    assert "camera_angle_x" not in doc and "fl_x" not in doc  # the angle no longer holds; fl_x differs per frame
    assert [f["fl_x"] for f in doc["frames"]] == [536.0, 550.0]
    assert (doc["camera_model"], doc["k1"]) == ("OPENCV", 0.0)


# ---------------------------------------------------------------- instant-ngp and per-frame overrides

def test_instant_ngp_camera_angles(tmp_path):
    doc = {"camera_angle_x": 0.6911112070083618, "camera_angle_y": 0.5, "w": 800, "h": 600, "aabb_scale": 16,
           "scale": 0.33, "offset": [0.5, 0.5, 0.5], "frames": [_frame("./train/r_0", DOC_C2W, rotation=0.0126)]}
    cams = Cameras.from_transforms_json(_write(tmp_path, doc), dtype=torch.float64)
    fx, fy = 400 / math.tan(0.6911112070083618 / 2), 300 / math.tan(0.25)
    torch.testing.assert_close(cams.K[0], torch.tensor([[fx, 0, 400], [0, fy, 300], [0, 0, 1]], dtype=torch.float64))
    assert cams.rig_meta == {k: doc[k] for k in ("camera_angle_x", "camera_angle_y", "w", "h", "aabb_scale", "scale",
                                                 "offset")}
    assert cams.meta == ({"file_path": "./train/r_0", "rotation": 0.0126},)
    _same_file(json.loads(cams.to_transforms_json(tmp_path / "o.json").read_text()), dict(doc))


def test_instant_ngp_focal_and_angle_together(tmp_path):
    doc = {"camera_angle_x": 2 * math.atan(400 / 500.), "fl_x": 500., "w": 800, "h": 600, "frames": [_frame()]}
    cams = Cameras.from_transforms_json(_write(tmp_path, doc))
    assert cams.K[0, 1, 1].item() == 500.  # fl_y defaults to fl_x
    assert cams.K[0, 0, 2].item() == 400. and cams.K[0, 1, 2].item() == 300.  # centred by default


def test_per_frame_intrinsics_only(tmp_path):
    frames = [_frame(f"{i}.png", fl_x=500. + i, fl_y=501., cx=320., cy=240., w=640, h=480) for i in range(3)]
    doc = {"camera_model": "PINHOLE", "frames": frames}
    cams = Cameras.from_transforms_json(_write(tmp_path, doc), dtype=torch.float64)
    assert cams.K[:, 0, 0].tolist() == [500., 501., 502.] and cams.hw == (480, 640)
    _same_file(json.loads(cams.to_transforms_json(tmp_path / "o.json").read_text()), json.loads(json.dumps(doc)))


def test_distortion_is_kept_with_a_warning(tmp_path):
    doc = {**NERFSTUDIO_DOC, "camera_model": "OPENCV_FISHEYE", "k1": 0.03, "k2": 0.005, "k3": 6e-4, "k4": 1e-4,
           "frames": [_frame("a.png", DOC_C2W)]}
    with pytest.warns(UserWarning, match="is ignored for the rays"):
        cams = Cameras.from_transforms_json(_write(tmp_path, doc))
    assert cams.rig_meta["k4"] == 1e-4 and cams.rig_meta["camera_model"] == "OPENCV_FISHEYE"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero distortion: no warning
        Cameras.from_transforms_json(_write(tmp_path, NERFSTUDIO_DOC, "zero.json"))


# ---------------------------------------------------------------- property tests on random rigs

def _rotation(q):
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


coord = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
quat = st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)
pose = st.tuples(quat, st.tuples(coord, coord, coord))
rig = st.fixed_dictionaries({
    "w": st.integers(8, 4000), "h": st.integers(8, 4000), "poses": st.lists(pose, min_size=1, max_size=5),
    "f": st.tuples(st.floats(5, 5000), st.floats(5, 5000)),
    "c": st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95)),
    "shared": st.booleans()})


def _rig_doc(r):
    frames = []
    for i, (q, t) in enumerate(r["poses"]):
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = _rotation(q), t
        frames.append(_frame(f"images/{i:05d}.png", m))
    cam = {"w": r["w"], "h": r["h"], "fl_x": r["f"][0], "fl_y": r["f"][1], "cx": r["c"][0] * r["w"],
           "cy": r["c"][1] * r["h"]}
    if r["shared"]: return {**cam, "frames": frames}
    return {"frames": [{**fr, **cam} for fr in frames]}


@settings(max_examples=40, deadline=None)
@given(rig)
def test_property_random_rigs_round_trip(tmp_path_factory, r):
    d = tmp_path_factory.mktemp("rig")
    doc = _rig_doc(r)
    cams = Cameras.from_transforms_json(_write(d, doc), dtype=torch.float64)
    m = np.array([fr["transform_matrix"] for fr in doc["frames"]])
    np.testing.assert_allclose(cams.c2w.numpy(), m @ GL, atol=1e-9)  # OpenCV c2w = OpenGL c2w with y, z flipped
    _same_file(json.loads(cams.to_transforms_json(d / "o.json").read_text()), json.loads(json.dumps(doc)), 1e-9)
    via = Cameras.from_facelift_json(cams.to_facelift_json(d / "opencv_cameras.json"), dtype=torch.float64)
    _same_file(json.loads(via.to_transforms_json(d / "v.json").read_text()), json.loads(json.dumps(doc)), 1e-9)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-180, 180), st.floats(-60, 60), st.floats(0.5, 5)), min_size=1, max_size=6),
       st.floats(20, 100), st.integers(8, 1024), st.integers(8, 1024))
def test_property_cameras_to_transforms_and_back(tmp_path_factory, views, fov, H, W):
    az, el, rad = zip(*views)
    cams = orbit(list(az), list(el), list(rad), fov_deg=fov, hw=(H, W), dtype=torch.float64)
    back = Cameras.from_transforms_json(cams.to_transforms_json(tmp_path_factory.mktemp("o") / "t.json"),
                                        dtype=torch.float64)
    torch.testing.assert_close(back.w2c, cams.w2c, atol=1e-9, rtol=0)
    torch.testing.assert_close(back.K, cams.K, atol=1e-9, rtol=0)
    assert back.hw == (H, W) and len(back) == len(cams)


# ---------------------------------------------------------------- error paths: one line, naming the file and the key

ROT = [[2., 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
BASE = {"w": 640, "h": 480, "fl_x": 500.}
ERRORS = [
    ("no focal", {"w": 640, "h": 480, "frames": [_frame()]}, "frame 0 ('images/frame_00001.png'): missing key 'fl_x'"),
    ("no size", {"fl_x": 500., "frames": [_frame()]}, "missing key 'w'"),
    ("no matrix", {**BASE, "frames": [{"file_path": "a.png"}]}, "frame 0 ('a.png'): missing key 'transform_matrix'"),
    ("no file_path", {**BASE, "frames": [{"transform_matrix": np.eye(4).tolist()}]},
     "frame 0: missing key 'file_path'"),
    ("3x4", {**BASE, "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4)[:3].tolist()}]},
     "key 'transform_matrix' must be 4x4; got shape (3, 4)"),
    ("ragged", {**BASE, "frames": [{"file_path": "a.png", "transform_matrix": [[1, 0], [0]]}]},
     "key 'transform_matrix' must be a matrix"),
    ("last row", {**BASE, "frames": [_frame("a.png", np.eye(4) + np.eye(4)[3] * 0.5)]}, "[0, 0, 0, 1]"),
    ("scaled", {**BASE, "frames": [_frame("a.png", ROT)]}, "key 'transform_matrix' has a non-rigid rotation"),
    ("nan matrix", {**BASE, "frames": [_frame("a.png", np.full((4, 4), np.nan))]},
     "key 'transform_matrix' must be finite"),
    ("inf focal", {**BASE, "fl_x": math.inf, "frames": [_frame()]}, "key 'fl_x' must be finite"),
    ("cx outside", {**BASE, "cx": 700., "frames": [_frame()]}, "key 'cx': the principal point (700, 240) lies outside"),
    ("cy outside", {**BASE, "frames": [_frame(cy=-1.)]}, "key 'cy'"),
    ("angle disagrees", {**BASE, "camera_angle_x": 1.5, "frames": [_frame()]}, "key 'camera_angle_x' = 1.5 rad"),
    ("angle y disagrees", {**BASE, "fl_y": 500., "camera_angle_y": 0.1, "frames": [_frame()]}, "key 'camera_angle_y'"),
    ("string focal", {**BASE, "fl_x": "500", "frames": [_frame()]}, "key 'fl_x' must be a number"),
    ("float width", {**BASE, "w": 640.5, "frames": [_frame()]}, "key 'w' must be a positive integer"),
    ("fisheye projection", {**BASE, "camera_model": "EQUIRECTANGULAR", "frames": [_frame()]}, "key 'camera_model'"),
    ("no frames", {**BASE}, "missing key 'frames'"),
    ("empty frames", {**BASE, "frames": []}, "key 'frames' must be a non-empty list"),
    ("not an object", [1, 2], "expected a JSON object"),
    ("bad applied_transform", {**BASE, "applied_transform": [[1, 0, 0]], "frames": [_frame()]},
     "key 'applied_transform' must be 3x4 or 4x4"),
    ("bad aabb_scale", {**BASE, "aabb_scale": -1, "frames": [_frame()]}, "key 'aabb_scale' must be positive"),
]


@pytest.mark.parametrize("doc,expected", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_malformed_files_get_one_line_errors(tmp_path, doc, expected):
    p = _write(tmp_path, doc)
    with pytest.raises(ValueError) as e:
        Cameras.from_transforms_json(p)
    msg = str(e.value)
    assert expected in msg and msg.startswith(str(p)) and "\n" not in msg


def test_not_json_not_utf8_and_sizes(tmp_path):
    (tmp_path / "a.json").write_text("{'frames': []}")
    with pytest.raises(ValueError, match=r"a\.json: not valid JSON \(.* at line 1, column 2\)"):
        Cameras.from_transforms_json(tmp_path / "a.json")
    (tmp_path / "b.json").write_bytes("{\"w\": \"\u00e9\"}".encode("latin-1"))
    with pytest.raises(ValueError, match=r"b\.json: not UTF-8 text"):
        Cameras.from_transforms_json(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError):
        Cameras.from_transforms_json(tmp_path / "missing.json")
    sizes = _write(tmp_path, {"fl_x": 5., "frames": [_frame("a.png", w=8, h=6), _frame("b.png", w=8, h=8)]})
    with pytest.raises(ValueError, match=r"frame 1 \('b.png'\) has \(h, w\) = \(8, 8\) but frame 0 has \(6, 8\)"):
        Cameras.from_transforms_json(sizes)


def test_writer_refuses_what_the_reader_would(tmp_path):
    tf = read_transforms_json(_write(tmp_path, NERFSTUDIO_DOC))
    bad = type(tf)({**tf.camera, "cx": -5.}, tf.meta, tf.frames)
    with pytest.raises(ValueError, match="write_transforms_json: frame 0 .* key 'cx'"):
        write_transforms_json(bad, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
