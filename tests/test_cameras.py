"""Camera sweeps, round trips, property tests and every error path of facelift_nb.cameras."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import (
    Cameras,
    check_cameras,
    from_blender,
    from_colmap,
    intrinsics_from_fov,
    look_at,
    orbit,
    plucker_inputs,
    published_cameras_path,
    ray_bundle,
    to_blender,
    to_colmap,
)
from facelift_nb.layouts import FACELIFT6_JSON_FRAMES

finite = st.floats(-5, 5, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(finite, finite, finite)


def random_rig(n=5, seed=0, hw=(48, 64)):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 360
    el = torch.rand(n, generator=g) * 120 - 60
    return orbit(az, el, radius=1 + torch.rand(n, generator=g) * 3, fov_deg=40., hw=hw)


# ---------------------------------------------------------------- the published rigs (shipped with the package)

@pytest.fixture
def published_json():
    return published_cameras_path()


UPSTREAM = {"inference": ("facelift_inference_cameras.json",),
            "gslrm_sample": ("facelift_data_sample", "gslrm", "sample_000", "opencv_cameras.json")}


@pytest.mark.reference
@pytest.mark.parametrize("rig", sorted(UPSTREAM))
def test_shipped_camera_files_are_the_published_ones(rig):
    from facelift_nb.testing import reference_path
    assert published_cameras_path(rig).read_bytes() == reference_path(*UPSTREAM[rig]).read_bytes()


def test_published_rig_geometry(published_json):
    cams = Cameras.from_facelift_json(published_json)
    slot = cams[list(FACELIFT6_JSON_FRAMES)]
    expected = torch.tensor([[0, -2.7, 0], [-1.909188, -1.909188, 0], [-2.7, 0, 0], [0, 2.7, 0], [2.7, 0, 0],
                             [1.909188, -1.909188, 0]])
    torch.testing.assert_close(slot.centers, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(slot.c2w[:, :3, 1], torch.tensor([0., 0, -1]).expand(6, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(slot.w2c[0], torch.tensor([[1., 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 2.7], [0, 0, 0, 1]]),
                               atol=1e-6, rtol=0)
    world_az = torch.rad2deg(torch.atan2(slot.centers[:, 1], slot.centers[:, 0])) % 360
    rel = (270 - world_az) % 360
    torch.testing.assert_close(rel, torch.tensor([0., 45, 90, 180, 270, 315]), atol=1e-4, rtol=0)
    torch.testing.assert_close(cams.fov_deg, torch.full((6, 2), 50.), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- json round trips

def test_json_round_trip_float32_lossless(published_json, tmp_path):
    a = Cameras.from_facelift_json(published_json)
    b = Cameras.from_facelift_json(a.to_facelift_json(tmp_path / "a.json"))
    c = Cameras.from_facelift_json(b.to_facelift_json(tmp_path / "b.json"))
    for x in (b, c):
        assert torch.equal(x.K, a.K) and torch.equal(x.w2c, a.w2c)
        assert x.meta == a.meta and x.rig_id == a.rig_id and x.hw == a.hw
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_json_round_trip_float64_reproduces_file_values(published_json, tmp_path):
    a = Cameras.from_facelift_json(published_json, dtype=torch.float64)
    out = json.loads(a.to_facelift_json(tmp_path / "a.json").read_text())
    src = json.loads(published_json.read_text())
    assert out["id"] == src["id"]
    for fo, fs in zip(out["frames"], src["frames"]):
        assert fo == fs  # every key and every number, exactly


def test_json_keeps_file_order_and_file_paths():
    cams = Cameras.from_facelift_json(published_cameras_path("gslrm_sample"))
    assert len(cams) == 32
    assert [m["file_path"] for m in cams.meta] == [f"images/cam_{i:03d}.png" for i in range(32)]
    assert check_cameras(cams, radius=2.7).ok


def _frame(**over):
    fr = {"w": 8, "h": 6, "fx": 10., "fy": 10., "cx": 4., "cy": 3., "w2c": np.eye(4).tolist()}
    fr.update(over)
    return fr


BAD_FILES = [
    ({"frames": []}, "non-empty 'frames'"),
    ([1, 2], "non-empty 'frames'"),
    ({"frames": [1]}, "frame 0 must be an object"),
    ({"frames": [{k: v for k, v in _frame().items() if k != "fx"}]}, "frame 0 is missing the key 'fx'"),
    ({"frames": [_frame(), {k: v for k, v in _frame().items() if k != "w2c"}]}, "frame 1 is missing the key 'w2c'"),
    ({"frames": [_frame(w2c=np.eye(4)[:3].tolist())]}, "frame 0 key 'w2c' must be 4x4"),
    ({"frames": [_frame(w2c=[["a"] * 4] * 4)]}, "frame 0 key 'w2c' must be a 4x4 list"),
    ({"frames": [_frame(fx=float("nan"))]}, "frame 0 key 'fx' must be finite"),
    ({"frames": [_frame(fy="10")]}, "frame 0 key 'fy' must be a number"),
    ({"frames": [_frame(), _frame(w=16)]}, "frame 1 has (h, w) = (6, 16)"),
    ({"frames": [_frame(w=8.5)]}, "frame 0 key 'w' must be a positive integer"),
    ({"frames": [_frame(h=0)]}, "frame 0 key 'h' must be a positive integer"),
    ({"frames": [_frame(w2c=(np.eye(4) * 2).tolist())]}, "[0, 0, 0, 1]"),
    ({"frames": [_frame(fx=-10.)]}, "positive"),
]


@pytest.mark.parametrize("data,msg", BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_malformed_json_raises(tmp_path, data, msg):
    p = tmp_path / "cams.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=None) as e:
        Cameras.from_facelift_json(p)
    assert msg in str(e.value) and str(p) in str(e.value)


def test_not_json(tmp_path):
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Cameras.from_facelift_json(tmp_path / "x.json")


def test_write_batched_rig_raises(tmp_path):
    with pytest.raises(ValueError, match="one rig"):
        Cameras.stack([random_rig()] * 2).to_facelift_json(tmp_path / "x.json")


# ---------------------------------------------------------------- conventions

@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_opengl_round_trip(seed):
    cams = random_rig(seed=seed)
    back = Cameras.from_opengl(cams.to_opengl(), cams.K, cams.hw)
    torch.testing.assert_close(back.w2c, cams.w2c, atol=2e-5, rtol=0)
    # OpenGL looks down -z: its z axis is the opposite of OpenCV's forward
    torch.testing.assert_close(cams.to_opengl()[..., :3, 2], -cams.c2w[..., :3, 2], atol=1e-6, rtol=0)


@given(st.integers(0, 10_000), st.sampled_from(["AUTO", "HORIZONTAL", "VERTICAL"]),
       st.floats(-0.2, 0.2), st.floats(-0.2, 0.2))
@settings(max_examples=25, deadline=None)
def test_blender_round_trip(seed, fit, sx, sy):
    rig = random_rig(seed=seed)
    b0 = to_blender(rig, sensor_fit=fit)
    cams = from_blender(b0.matrix_world, b0.lens_mm, b0.sensor_mm, rig.hw, sensor_fit=fit, shift_x=sx, shift_y=sy)
    b = to_blender(cams, sensor_fit=fit)
    back = from_blender(b.matrix_world, b.lens_mm, b.sensor_mm, cams.hw, sensor_fit=fit, shift_x=b.shift_x,
                        shift_y=b.shift_y)
    torch.testing.assert_close(back.w2c, cams.w2c, atol=2e-5, rtol=0)
    torch.testing.assert_close(back.K, cams.K, atol=1e-3, rtol=0)
    torch.testing.assert_close(cams.w2c, rig.w2c, atol=2e-5, rtol=0)


def test_blender_object_scale_is_ignored():
    mw = torch.tensor([[1., 0, 0, 0], [0, 0, -1, -2.7], [0, 1, 0, 0], [0, 0, 0, 1]])
    scaled = mw.clone()
    scaled[:3, :3] *= 3
    a, b = from_blender(mw[None], 50.), from_blender(scaled[None], 50.)
    torch.testing.assert_close(a.w2c, b.w2c)


@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_colmap_round_trip(tmp_path_factory, seed):
    rig = random_rig(seed=seed)
    folder = to_colmap(rig, tmp_path_factory.mktemp("colmap"))
    back = from_colmap(folder)
    torch.testing.assert_close(back.w2c, rig.w2c, atol=2e-5, rtol=0)
    torch.testing.assert_close(back.K, rig.K)
    assert back.names == tuple(f"view_{i:03d}.png" for i in range(len(rig)))


def _write_colmap(folder, cameras_lines, images_lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text("# c\n" + "\n".join(cameras_lines) + "\n")
    (folder / "images.txt").write_text("# i\n" + "\n".join(images_lines) + "\n")
    return folder


def test_colmap_models_image_id_order_and_distortion(tmp_path):
    # views come in image-id order (3, then 5), not in name order and not in file order
    imgs = ["5 1 0 0 0 0 0 2.7 2 a.png", "", "3 1 0 0 0 0 0 2.7 1 b.png", "1.0 2.0 -1"]
    f = _write_colmap(tmp_path / "m", ["1 SIMPLE_PINHOLE 64 48 50 32 24", "2 OPENCV 64 48 50 51 32 24 0.1 0 0 0"], imgs)
    with pytest.warns(UserWarning, match="distortion"):
        cams = from_colmap(f)
    assert cams.names == ("b.png", "a.png")
    assert [m["colmap_image_id"] for m in cams.meta] == [3, 5]
    torch.testing.assert_close(cams.K[:, 0, 0], torch.tensor([50., 50.]))
    torch.testing.assert_close(cams.K[:, 1, 1], torch.tensor([50., 51.]))
    torch.testing.assert_close(cams.centers, torch.tensor([[0., 0, -2.7]] * 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_colmap(_write_colmap(tmp_path / "n", ["1 SIMPLE_RADIAL 64 48 50 32 24 0"],
                                  ["1 1 0 0 0 0 0 1 1 a.png", ""]))


@pytest.mark.parametrize("cams,imgs,msg", [
    (["1 FISHEYE 64 48 1 2 3"], ["1 1 0 0 0 0 0 1 1 a.png", ""], "uses the model 'FISHEYE'"),
    (["1 PINHOLE 64 48 1 2 3"], ["1 1 0 0 0 0 0 1 1 a.png", ""], "needs 4 parameters"),
    (["1 PINHOLE 64"], ["1 1 0 0 0 0 0 1 1 a.png", ""], "malformed camera line"),
    (["1 PINHOLE 64 48 50 50 32 24"], ["1 1 0 0 0 0 0 1 7 a.png", ""], "refers to camera 7"),
    (["1 PINHOLE 64 48 50 50 32 24"], ["1 1 0 0", ""], "malformed image line"),
    (["1 PINHOLE 64 48 50 50 32 24"], ["1 x 0 0 0 0 0 1 1 a.png", ""], "malformed image line"),
    (["1 PINHOLE 64 48 50 50 32 24"], [], "no images"),
    (["1 PINHOLE 64 48 50 50 32 24", "2 PINHOLE 32 48 50 50 16 24"],
     ["1 1 0 0 0 0 0 1 1 a.png", "", "2 1 0 0 0 0 0 1 2 b.png", ""], "several sizes"),
])
def test_colmap_errors(tmp_path, cams, imgs, msg):
    with pytest.raises(ValueError, match=None) as e:
        from_colmap(_write_colmap(tmp_path / "m", cams, imgs))
    assert msg in str(e.value)


def test_colmap_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cameras.txt"):
        from_colmap(tmp_path)


# ---------------------------------------------------------------- look_at / orbit properties

@given(vec3, vec3, vec3)
@settings(max_examples=200, deadline=None)
def test_look_at_is_proper_orthonormal(eye, target, up):
    eye, target, up = map(lambda v: torch.tensor(v, dtype=torch.float64), (eye, target, up))
    f = target - eye
    assume(f.norm() > 1e-3 and up.norm() > 1e-3)
    assume(torch.linalg.cross(f / f.norm(), up / up.norm()).norm() > 1e-3)
    c2w = look_at(eye, target, up, dtype=torch.float64)
    R = c2w[:3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-9
    torch.testing.assert_close(R[:, 2], f / f.norm(), atol=1e-9, rtol=0)  # forward = +z toward the target
    assert float(-R[:, 1] @ up) > 0  # image up (-y) leans toward the world up
    assert abs(float(R[:, 0] @ up)) < 1e-9 * up.norm()  # no roll: the image x axis is horizontal
    torch.testing.assert_close(c2w[:3, 3], eye)


@pytest.mark.parametrize("eye,target,up,msg", [
    ([0., 0, 0], [0., 0, 0], [0., 0, 1], "must differ"),
    ([0., 0, 0], [0., 0, 1], [0., 0, 2], "parallel"),
    ([0., 0, 0], [0., 0, 1], [0., 0, -1e-3], "parallel"),
    ([0., 0, 0], [0., 1, 0], [0., 0, 0], "non-zero"),
])
def test_look_at_degenerate(eye, target, up, msg):
    with pytest.raises(ValueError, match=msg):
        look_at(eye, target, up)


@given(st.lists(st.floats(-720, 720), min_size=1, max_size=8), st.floats(-80, 80), st.floats(0.1, 10),
       st.sampled_from([("z", "-y"), ("y", "z"), ("-y", "x"), ("x", "-z")]), vec3)
@settings(max_examples=100, deadline=None)
def test_orbit_properties(az, el, radius, axes, target):
    cams = orbit(az, el, radius, up_axis=axes[0], front_axis=axes[1], target=target, dtype=torch.float64)
    t = torch.tensor(target, dtype=torch.float64)
    torch.testing.assert_close((cams.centers - t).norm(dim=-1), torch.full((len(az),), radius, dtype=torch.float64))
    rep = check_cameras(cams, subject_center=target, radius=radius, max_angle_deg=1e-3)
    assert rep.ok, rep.problems


def test_orbit_relative_azimuth_convention():
    # relative 90 deg is the subject's right: world -X with Z up and front -Y; world azimuth = 270 - relative
    for rel in (0, 30, 45, 90, 135, 200, 315):
        c = orbit([rel]).centers[0]
        world = math.degrees(math.atan2(c[1], c[0])) % 360
        assert abs((world - (270 - rel)) % 360) < 1e-4 or abs((world - (270 - rel)) % 360 - 360) < 1e-4


# ---------------------------------------------------------------- intrinsics after resize / crop, rays

@pytest.mark.parametrize("new_hw", [(24, 32), (96, 128), (48, 32), (100, 70)])
def test_resize_keeps_rays(new_hw):
    cams = random_rig(n=2, hw=(48, 64))
    small = cams.resize(new_hw)
    H, W = cams.hw
    H2, W2 = new_hw
    # the centre of resized pixel (i, j) is the continuous point ((j+0.5)·W/W2, (i+0.5)·H/H2) of the original
    ys, xs = torch.meshgrid((torch.arange(H2) + 0.5) * H / H2, (torch.arange(W2) + 0.5) * W / W2, indexing="ij")
    K = cams.K[:, None, None]
    d = torch.stack([(xs - K[..., 0, 2]) / K[..., 0, 0], (ys - K[..., 1, 2]) / K[..., 1, 1], torch.ones(2, H2, W2)], -1)
    d = torch.nn.functional.normalize(torch.einsum("vij,vhwj->vhwi", cams.c2w[:, :3, :3], d), dim=-1)
    torch.testing.assert_close(ray_bundle(small).directions, d, atol=1e-6, rtol=0)


@pytest.mark.parametrize("box", [(0, 0, 64, 48), (10, 5, 40, 30), (63, 47, 64, 48)])
def test_crop_keeps_rays(box):
    cams = random_rig(n=3)
    x0, y0, x1, y1 = box
    torch.testing.assert_close(ray_bundle(cams.crop(box)).directions, ray_bundle(cams).directions[:, y0:y1, x0:x1],
                               atol=1e-6, rtol=0)


def test_crop_then_resize_composes():
    cams = random_rig(n=1, hw=(48, 64))
    a = cams.crop((8, 0, 56, 48)).resize((24, 24))
    torch.testing.assert_close(a.K[0], torch.tensor([[cams.K[0, 0, 0] / 2, 0, (cams.K[0, 0, 2] - 8) / 2],
                                                     [0, cams.K[0, 1, 1] / 2, cams.K[0, 1, 2] / 2], [0, 0, 1]]))


def test_ray_through_principal_point_is_optical_axis():
    K = torch.tensor([[[40., 0, 10.5], [0, 40., 7.5], [0, 0, 1]]])
    for c2w in random_rig(n=4).c2w:
        cams = Cameras.from_c2w(c2w[None], K, (16, 24))
        rays = ray_bundle(cams)
        torch.testing.assert_close(rays.directions[0, 7, 10], c2w[:3, 2], atol=1e-6, rtol=0)
        torch.testing.assert_close(rays.origins[0, 7, 10], c2w[:3, 3])
        torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(1, 16, 24))


def test_plucker_inputs_match_facts_formula():
    torch.manual_seed(0)
    cams = Cameras.stack([random_rig(n=2, seed=s, hw=(8, 8)) for s in range(3)])  # [B=3, V=2]
    img = torch.rand(3, 2, 3, 8, 8)
    x = plucker_inputs(img, cams)
    assert x.shape == (3, 2, 9, 8, 8)
    torch.testing.assert_close(x[:, :, :3], img * 2 - 1)
    b, v, yy, xx = 1, 1, 5, 2
    K, c2w = cams.K[b, v].double(), cams.c2w[b, v].double()
    dc = torch.tensor([(xx + 0.5 - K[0, 2]) / K[0, 0], (yy + 0.5 - K[1, 2]) / K[1, 1], 1.], dtype=torch.float64)
    d = c2w[:3, :3] @ (dc / dc.norm())
    d = d / d.norm()
    o = c2w[:3, 3]
    torch.testing.assert_close(x[b, v, 3:6, yy, xx].double(), d, atol=1e-6, rtol=0)
    torch.testing.assert_close(x[b, v, 6:9, yy, xx].double(), o + (-(o @ d)) * d, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- transform

def test_transform_preserves_projection():
    torch.manual_seed(1)
    cams = random_rig(n=4).to(dtype=torch.float64)
    pts = torch.randn(10, 3, dtype=torch.float64)
    R = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    R = R * torch.sign(torch.linalg.det(R))
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = 1.7 * R, torch.tensor([0.3, -2., 5.])
    moved = cams.transform(T)

    def project(c, p):
        cam = p @ c.w2c[:, :3, :3].transpose(1, 2) + c.w2c[:, None, :3, 3]
        uv = cam @ c.K.transpose(1, 2)
        return uv[..., :2] / uv[..., 2:]

    torch.testing.assert_close(project(moved, pts @ T[:3, :3].T + T[:3, 3]), project(cams, pts))
    assert check_cameras(moved).ok


# ---------------------------------------------------------------- check_cameras

def test_check_cameras_flags(published_json):
    ref = Cameras.from_facelift_json(published_json)
    assert check_cameras(ref, radius=2.7).ok
    w2c = ref.w2c.clone()
    scaled = w2c.clone()
    scaled[3, :3, :3] *= 1.5  # a scaled rotation never becomes a Cameras
    with pytest.raises(ValueError, match="camera 3 has .*scaled by about 1.5"):
        Cameras(ref.K, scaled, ref.hw)
    w2c[4] = torch.linalg.inv(ref.w2c[4]) @ torch.diag(torch.tensor([1., 1, 1, 1]))  # c2w passed as w2c
    K = ref.K.clone()
    K[5, 0, 2] = 400.  # principal point far off-centre
    K[1, 0, 0] *= 2  # fx != fy
    rep = check_cameras(Cameras(K, w2c, ref.hw), subject_center=(0, 0, 0), radius=2.7)
    text = "\n".join(rep.problems)
    assert "camera 4: faces away" in text or "camera 4: not facing" in text
    assert "camera 5: principal point (400.0, 256.0) is far from the centre" in text
    assert "camera 1: fx/fy = 2.00" in text
    assert "camera 0" not in text and "camera 2" not in text and "camera 3" not in text
    assert "PROBLEMS" in str(rep)
    # distance
    far = orbit([0., 90], radius=27.)
    assert "differs from the expected radius" in "\n".join(check_cameras(far, radius=2.7).problems)


def test_check_cameras_backward_rig_and_single_camera():
    rig = orbit([0, 90, 180, 270])
    backward = Cameras(rig.K, torch.diag(torch.tensor([1., -1, -1, 1])) @ rig.w2c, rig.hw)  # rotated 180° about x
    rep = check_cameras(backward)
    assert sum("faces away" in p for p in rep.problems) == 4
    one = check_cameras(rig[0])
    assert one.ok and math.isnan(one.facing_angle_deg[0])  # unknown subject: facing not checked
    with pytest.raises(ValueError, match="check_cameras found problems"):
        check_cameras(backward, strict=True)


# ---------------------------------------------------------------- the remaining error paths

def _cams():
    return orbit([0., 90.], hw=(8, 8))


ERRORS = [
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4)[None], (8, 8), names=("a",), meta=({},)).crop((0, 0, 0, 1)),
     ValueError, "x1 > x0"),
    (lambda: _cams()[5], IndexError, "out of range"),
    (lambda: _cams()[[0, 5]], IndexError, "out of range"),
    (lambda: _cams()[1.5], TypeError, "selected by int"),
    (lambda: _cams().resize((0, 8)), ValueError, "positive integers"),
    (lambda: _cams().transform(torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]])),
     ValueError, "last row"),
    (lambda: Cameras.stack([]), TypeError, "non-empty"),
    (lambda: Cameras.from_fov(50., (8, 8), c2w=torch.eye(4)[None], w2c=torch.eye(4)[None]), ValueError, "exactly one"),
    (lambda: orbit([float("nan")]), ValueError, "finite"),
    (lambda: orbit([0.], front_axis=[0, 0, 0]), ValueError, "non-zero 3-vector"),
    (lambda: plucker_inputs(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), _cams()), ValueError, "floating point"),
    (lambda: plucker_inputs(torch.zeros(1, 3, 8, 8), _cams()), ValueError, "batch shape"),
    (lambda: plucker_inputs(np.zeros((2, 3, 8, 8)), _cams()), TypeError, "must be a tensor"),
    (lambda: ray_bundle("cams"), TypeError, "must be Cameras"),
    (lambda: check_cameras("cams"), TypeError, "must be Cameras"),
    (lambda: from_blender(torch.eye(4), 50.), ValueError, "[..., V, 4, 4]"),
    (lambda: from_blender(torch.eye(4)[None], 50., sensor_fit="FIT"), ValueError, "sensor_fit"),
    (lambda: to_blender(Cameras(torch.tensor([[[10., 0, 4], [0, 20, 4], [0, 0, 1]]]), torch.eye(4)[None], (8, 8))),
     ValueError, "square pixels"),
    (lambda: to_colmap(Cameras.stack([_cams()] * 2), "/tmp/x"), ValueError, "one rig"),
    (lambda: intrinsics_from_fov(50., (8, 8.5)), ValueError, "positive integers"),
    (lambda: Cameras(torch.eye(3)[None], object(), (8, 8)), TypeError, "`w2c` must be a tensor"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4), (8, 8)), ValueError, "[..., V, 4, 4] world-to-camera"),
    (lambda: Cameras(torch.eye(3), torch.eye(4)[None], (8, 8)), ValueError, "[..., V, 3, 3] pixel intrinsics"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4).expand(2, 4, 4), (8, 8)), ValueError, "share the batch shape"),
    (lambda: Cameras(torch.eye(3)[None].double(), torch.eye(4)[None], (8, 8)), ValueError, "share dtype and device"),
    (lambda: Cameras(torch.eye(3)[None] * float("inf"), torch.eye(4)[None], (8, 8)), ValueError, "finite"),
    (lambda: Cameras(torch.tensor([[[1., 0.5, 0], [0, 1, 0], [0, 0, 1]]]), torch.eye(4)[None], (8, 8)),
     ValueError, "no skew"),
    (lambda: Cameras(torch.tensor([[[1., 0, 0], [0, 1, 0], [0, 0, 2]]]), torch.eye(4)[None], (8, 8)),
     ValueError, "no skew"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4)[None], (8, 8), names=("a", "b")),
     ValueError, "one entry per view"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4)[None], (8, 8), meta=({}, {})), ValueError, "one entry per view"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4)[None], (8, 8), names=(3,)), TypeError, "strings"),
    (lambda: Cameras(torch.eye(3)[None], torch.eye(4)[None], (8, 8), meta=("x",)), TypeError, "dicts"),
    (lambda: _cams()[torch.tensor([True, False, True])], ValueError, "boolean view mask"),
    (lambda: _cams()[2:], ValueError, "keeps no views"),
    (lambda: _cams().crop((0, 0, 4)), ValueError, "four integers"),
    (lambda: _cams().transform(torch.diag(torch.tensor([1., 1, -1, 1]))), ValueError, "handedness"),
    (lambda: _cams().transform(torch.diag(torch.tensor([1., 2, 1, 1]))), ValueError, "no shear"),
    (lambda: _cams().transform(torch.eye(3)), ValueError, "4x4 similarity"),
    (lambda: _cams().to(dtype=torch.int32), TypeError, "floating"),
    (lambda: Cameras.from_c2w(torch.eye(4), torch.eye(3), (8, 8)), ValueError, "camera-to-world (OpenCV)"),
    (lambda: Cameras.stack([_cams(), _cams()[0]]), ValueError, "share batch shape and hw"),
    (lambda: orbit([0.], up_axis="z", front_axis="z"), ValueError, "perpendicular"),
    (lambda: orbit([0.], up_axis="q"), ValueError, "one of x, y, z"),
    (lambda: orbit([0.], elevation_deg=-90.), ValueError, "(-90, 90)"),
    (lambda: orbit([0.], radius=-1.), ValueError, "positive"),
    (lambda: intrinsics_from_fov(0., (8, 8)), ValueError, "(0, 180)"),
    (lambda: intrinsics_from_fov(50., (8, 8), fov_axis="d"), ValueError, "fov_axis"),
    (lambda: plucker_inputs(torch.zeros(2, 8, 8, 3), _cams()), ValueError, "Channels-last"),
    (lambda: plucker_inputs(torch.full((2, 3, 8, 8), 2.), _cams()), ValueError, "Divide by 255"),
    (lambda: plucker_inputs(torch.zeros(2, 3, 4, 4), _cams()), ValueError, "cameras.resize"),
    (lambda: check_cameras(orbit([0.]), subject_center=(0, 0, 0), strict=True, radius=1.),
     ValueError, "check_cameras found problems"),
]


@pytest.mark.parametrize("call,exc,msg", ERRORS, ids=[m for _, _, m in ERRORS])
def test_error_paths(call, exc, msg):
    with pytest.raises(exc) as e:
        call()
    assert msg in str(e.value)
