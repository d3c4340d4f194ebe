"""COLMAP models: text <-> binary round trips, property tests on random models, the auto choice, every error path."""
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import Cameras, colmap_points, from_colmap, orbit, to_colmap
from facelift_nb.colmap import (
    CAMERA_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoint3D,
    model_difference,
    read_colmap_model,
    write_colmap_model,
)

FILES = {"txt": ("cameras.txt", "images.txt", "points3D.txt"), "bin": ("cameras.bin", "images.bin", "points3D.bin")}
names = (st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"), min_size=1, max_size=12)
         .map(str.strip).filter(bool))


@st.composite
def models(draw, keypoints=True, one_size=False):
    "A random model: cameras of every model, unit quaternions, names with spaces, keypoints and tracks."
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cam_ids = draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=5, unique=True))
    cameras, size = {}, rng.integers(1, 5000, 2)
    for cid in cam_ids:
        model = draw(st.sampled_from(sorted(CAMERA_MODELS)))
        params = rng.normal(size=CAMERA_MODELS[model][1]) * 100
        params[:2] = abs(params[:2]) + 1e-3  # positive focal lengths
        w, h = size if one_size else rng.integers(1, 5000, 2)
        cameras[cid] = ColmapCamera(cid, model, int(w), int(h), params)
    img_ids = draw(st.lists(st.integers(0, 2**31 - 1), min_size=int(one_size), max_size=6, unique=True))
    pt_ids = draw(st.lists(st.integers(0, 2**63 - 1), max_size=5, unique=True))
    images = {}
    for iid in img_ids:
        q = rng.normal(size=4)
        n = int(rng.integers(0, 4)) if keypoints else 0
        ids = rng.choice(np.array([-1, *pt_ids], dtype=np.int64), n)
        images[iid] = ColmapImage(iid, q / np.linalg.norm(q), rng.normal(size=3) * 5, draw(st.sampled_from(cam_ids)),
                                  draw(names) + " " + draw(names), rng.normal(size=(n, 2)) * 300, ids)
    points = {}
    for pid in pt_ids:
        m = int(rng.integers(0, 4))
        points[pid] = ColmapPoint3D(pid, rng.normal(size=3), rng.integers(0, 256, 3), float(rng.exponential()),
                                    rng.integers(0, 2**31, m), rng.integers(0, 2**31, m))
    return ColmapModel(cameras, images, points)


def files(folder, fmt):
    return {name: (folder / name).read_bytes() for name in FILES[fmt]}


def small_model():
    cams = {1: ColmapCamera(1, "OPENCV", 64, 48, [50., 51., 32., 24., 0.01, 0., 0., 0.]),
            2: ColmapCamera(2, "PINHOLE", 64, 48, [40., 40., 32., 24.])}
    ims = {1: ColmapImage(1, [1., 0, 0, 0], [0., 0, 2.7], 1, "a photo.png", [[1.5, 2.5], [3., 4.]], [7, -1]),
           2: ColmapImage(2, [0., 0, 0, 1], [0.1, 0, 2.7], 2, "b.png")}
    return ColmapModel(cams, ims, {7: ColmapPoint3D(7, [0.1, 0.2, 0.3], [255, 128, 0], 0.5, [1], [0])})


# ---------------------------------------------------------------- round trips

@given(models())
@settings(max_examples=40, deadline=None)
def test_text_binary_text_is_lossless(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("m")
    write_colmap_model(model, d / "t1", "txt")
    from_text = read_colmap_model(d / "t1")
    assert model_difference(from_text, model) is None
    write_colmap_model(from_text, d / "b", "bin")
    from_bin = read_colmap_model(d / "b")
    assert model_difference(from_bin, model) is None
    assert list(from_bin.images) == list(model.images)  # record order kept
    write_colmap_model(from_bin, d / "t2", "txt")
    assert files(d / "t2", "txt") == files(d / "t1", "txt")


@given(models())
@settings(max_examples=25, deadline=None)
def test_binary_text_binary_keeps_the_bytes(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("m")
    write_colmap_model(model, d / "b1", "bin")
    write_colmap_model(read_colmap_model(d / "b1", "bin"), d / "t", "txt")
    write_colmap_model(read_colmap_model(d / "t", "txt"), d / "b2", "bin")
    assert files(d / "b2", "bin") == files(d / "b1", "bin")


@given(models(keypoints=False, one_size=True), st.sampled_from(["txt", "bin"]))
@settings(max_examples=25, deadline=None)
def test_from_colmap_to_colmap_reproduces_cameras_and_images(tmp_path_factory, model, fmt):
    used = {i.camera_id for i in model.images.values()}
    model = ColmapModel({k: c for k, c in model.cameras.items() if k in used}, model.images)
    distorted = any(np.any(c.distortion != 0) for c in model.cameras.values())
    d = tmp_path_factory.mktemp("m")
    write_colmap_model(model, d / "in", fmt)
    for dtype in (torch.float32, torch.float64):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cams = from_colmap(d / "in", dtype=dtype)
        assert bool(caught) == distorted
        assert [m["colmap_image_id"] for m in cams.meta] == sorted(model.images)  # image-id order
        assert cams.names == tuple(model.images[k].name for k in sorted(model.images))
        back = read_colmap_model(to_colmap(cams, d / f"out_{dtype}", fmt))
        assert model_difference(back, ColmapModel(model.cameras, model.images)) is None


@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_to_colmap_from_colmap_round_trip_of_a_rig(tmp_path, fmt):
    rig = orbit(torch.linspace(0, 300, 6), torch.linspace(-30, 30, 6), radius=2.7, fov_deg=40., hw=(48, 64))
    back = from_colmap(to_colmap(rig, tmp_path / "a", fmt))
    torch.testing.assert_close(back.w2c, rig.w2c, atol=2e-5, rtol=0)
    torch.testing.assert_close(back.K, rig.K)
    assert back.names == tuple(f"view_{i:03d}.png" for i in range(6))
    to_colmap(back, tmp_path / "b", fmt)  # written back unchanged: the same files
    assert files(tmp_path / "b", fmt) == files(tmp_path / "a", fmt)
    moved = back.transform(torch.tensor([[1., 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    again = from_colmap(to_colmap(moved, tmp_path / "c", fmt))  # changed poses are written from w2c
    torch.testing.assert_close(again.centers, rig.centers + torch.tensor([0.5, 0, 0]), atol=2e-5, rtol=0)


def test_half_turn_poses_survive(tmp_path):
    w2c = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    w2c[0, :3, :3] = torch.diag(torch.tensor([-1., 1, -1], dtype=torch.float64))  # a half turn about y
    w2c[1, :3, :3] = torch.tensor([[0., 1, 0], [1, 0, 0], [0, 0, -1]], dtype=torch.float64)  # about (1, 1, 0)
    w2c[:, 2, 3] = 3.
    K = torch.tensor([[8., 0, 4], [0, 8, 4], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    rig = from_colmap(to_colmap(Cameras(K, w2c, (8, 8)), tmp_path), dtype=torch.float64)
    torch.testing.assert_close(rig.w2c, w2c, atol=1e-12, rtol=0)


def test_points(tmp_path):
    model = small_model()
    write_colmap_model(model, tmp_path / "m", "bin")
    pts = colmap_points(tmp_path / "m")
    assert pts.dtype == torch.float64 and pts.tolist() == [[0.1, 0.2, 0.3]]
    (tmp_path / "m" / "points3D.bin").unlink()  # points3D is optional
    assert colmap_points(tmp_path / "m").shape == (0, 3)
    assert read_colmap_model(tmp_path / "m").images.keys() == model.images.keys()


# ---------------------------------------------------------------- the auto choice

def test_auto_reads_whichever_exists_and_checks_that_both_agree(tmp_path):
    model = small_model()
    for fmt in ("txt", "bin"):
        assert model_difference(read_colmap_model(write_colmap_model(model, tmp_path / fmt, fmt)), model) is None
    both = write_colmap_model(model, write_colmap_model(model, tmp_path / "both", "txt"), "bin")
    assert model_difference(read_colmap_model(both), model) is None
    ims = dict(model.images)
    ims[2] = ColmapImage(2, [0., 0, 0, 1], [0.1 + 1e-16 * 2**3, 0, 2.7], 2, "b.png")  # one ulp-ish apart
    write_colmap_model(ColmapModel(model.cameras, ims, model.points3D), both, "bin")
    with pytest.raises(ValueError, match=r"image 2 has tvec\[0\] = 0.1 in images.txt but 0.10000000000000") as e:
        read_colmap_model(both)
    assert "format='txt'" in str(e.value)
    assert read_colmap_model(both, "txt").images[2].tvec[0] == 0.1
    write_colmap_model(ColmapModel(model.cameras, model.images), both, "bin")
    with pytest.raises(ValueError, match="point 7 is only in points3D.txt"):
        read_colmap_model(both)
    (both / "points3D.bin").unlink()  # an absent points3D.bin reads as no points: still a disagreement
    with pytest.raises(ValueError, match="point 7 is only in points3D.txt"):
        from_colmap(both)


# ---------------------------------------------------------------- error paths

def test_truncated_binary_files_name_the_file_and_the_offset(tmp_path):
    src = write_colmap_model(small_model(), tmp_path / "src", "bin")
    d = tmp_path / "cut"
    for name in FILES["bin"]:
        data = (src / name).read_bytes()
        for cut in [*range(0, len(data), 7), len(data) - 1]:
            write_colmap_model(small_model(), d, "bin")
            (d / name).write_bytes(data[:cut])
            with pytest.raises(ValueError, match=rf"{name}: .* at byte offset \d+") as e:
                read_colmap_model(d)
            assert "\n" not in str(e.value)
        (d / name).write_bytes(data + b"\0")
        with pytest.raises(ValueError, match="1 unexpected bytes after the last record"):
            read_colmap_model(d)


@given(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(FILES["bin"]))
@settings(max_examples=60, deadline=None)
def test_garbled_binary_reads_or_fails_clearly(tmp_path_factory, pos, val, name):
    d = write_colmap_model(small_model(), tmp_path_factory.mktemp("g"), "bin")
    data = bytearray((d / name).read_bytes())
    data[pos % len(data)] = val
    (d / name).write_bytes(bytes(data))
    try: read_colmap_model(d)
    except ValueError as e:
        assert str(e).startswith(str(d)) and "\n" not in str(e), str(e)


def test_unknown_model(tmp_path):
    d = write_colmap_model(small_model(), tmp_path / "m", "bin")
    data = bytearray((d / "cameras.bin").read_bytes())
    data[12:16] = struct.pack("<i", 5)  # the first camera's model id: 5 is OPENCV_FISHEYE
    (d / "cameras.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cameras.bin: camera 1 has the model id 5.*undistort.*byte offset 8"):
        read_colmap_model(d)
    t = write_colmap_model(small_model(), tmp_path / "t", "txt")
    (t / "cameras.txt").write_text("1 OPENCV_FISHEYE 64 48 50 50 32 24 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"cameras.txt, line 1: camera 1 uses the model 'OPENCV_FISHEYE'.*Undistort"):
        read_colmap_model(t)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="COLMAP model folder missing.*nope"):
        read_colmap_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no COLMAP model here: expected cameras.txt"):
        read_colmap_model(tmp_path)
    for fmt in ("txt", "bin"):
        d = write_colmap_model(small_model(), tmp_path / fmt, fmt)
        (d / f"images.{fmt}").unlink()
        with pytest.raises(FileNotFoundError, match=f"model file missing: .*images.{fmt}"):
            read_colmap_model(d)
    with pytest.raises(FileNotFoundError, match=r"the folder has cameras.bin: read it with format='bin'"):
        read_colmap_model(tmp_path / "bin", "txt")
    with pytest.raises(ValueError, match="`format` must be one of"):
        read_colmap_model(tmp_path / "bin", "json")


@pytest.mark.parametrize("fname,text,msg", [
    ("cameras.txt", "1 PINHOLE 64 48 nan 50 32 24\n", "line 1: `params of camera 1` must be finite"),
    ("cameras.txt", "1 PINHOLE 64 48 50 50 32 24\n1 PINHOLE 64 48 50 50 32 24\n", "camera 1 appears twice"),
    ("images.txt", "1 1 0 0 0 0 0 inf 1 a.png\n\n", "`tvec` must be finite"),
    ("images.txt", "1 1 0 0 0 0 0 1 9 a.png\n\n", "images.txt: image 1 ('a.png') refers to camera 9, absent"),
    ("images.txt", "1 1 0 0 0 0 0 1 1 a.png\n1 nan 3\n", "`xys of image 1` must be finite"),
    ("images.txt", "1 1 0 0 0 0 0 1 1 a.png\n1 2 -2\n", "ids or -1 (unmatched)"),
    ("points3D.txt", "7 0 0 nan 1 2 3 0.5\n", "`xyz of point 7` must be finite"),
    ("points3D.txt", "7 0 0 0 1 2 300 0.5\n", "must fit in uint8"),
])
def test_bad_text_values(tmp_path, fname, text, msg):
    d = write_colmap_model(small_model(), tmp_path / "m", "txt")
    (d / fname).write_text(text)
    with pytest.raises(ValueError, match=None) as e:
        read_colmap_model(d)
    assert msg in str(e.value) and fname in str(e.value), str(e.value)


def test_bad_binary_values(tmp_path):
    d = write_colmap_model(small_model(), tmp_path / "m", "bin")
    data = bytearray((d / "images.bin").read_bytes())
    data[8 + 4 + 32:8 + 4 + 40] = struct.pack("<d", float("nan"))  # the first image's tx
    (d / "images.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"images.bin, the image at byte offset 8: `tvec` must be finite"):
        read_colmap_model(d)
    ims = dict(small_model().images)
    ims[2] = ColmapImage(2, [1., 0, 0, 0], [0., 0, 1], 2, "b.png")
    model = small_model()
    write_colmap_model(ColmapModel({1: model.cameras[1]}, {1: model.images[1]}), d, "bin")
    cams_one = (d / "cameras.bin").read_bytes()
    write_colmap_model(model, d, "bin")
    (d / "cameras.bin").write_bytes(cams_one)  # image 2 now refers to a missing camera
    with pytest.raises(ValueError, match=r"images.bin: image 2 \('b.png'\) refers to camera 2, absent"):
        read_colmap_model(d)


def test_records_and_writer_validate():
    with pytest.raises(ValueError, match="needs 8 parameters; got 4"):
        ColmapCamera(1, "OPENCV", 4, 4, [1, 1, 2, 2])
    with pytest.raises(ValueError, match="`width` must be an integer"):
        ColmapCamera(1, "PINHOLE", 0, 4, [1, 1, 2, 2])
    with pytest.raises(ValueError, match="line breaks"):
        ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 1, "a\nb.png")
    with pytest.raises(ValueError, match="point2D_idxs of point 1` must have shape"):
        ColmapPoint3D(1, [0, 0, 0], [0, 0, 0], 0., [1, 2], [0])
    with pytest.raises(TypeError, match="`model` must be a ColmapModel"):
        write_colmap_model({}, "/tmp/never")
    with pytest.raises(ValueError, match="`format` must be 'txt' or 'bin'"):
        to_colmap(orbit([0.]), "/tmp/never", "json")
