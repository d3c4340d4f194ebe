"""Data preparation end to end (normalize -> reproject -> write -> check) on a synthetic capture in another
convention, and every classic mistake injected into a written dataset and reported by check_dataset."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from facelift_nb.cameras import Cameras, look_at, orbit_directions
from facelift_nb.data import (
    PreparedSample,
    check_dataset,
    normalize_rig,
    reproject_to_layout,
    warp_to_camera,
    write_gslrm_dataset,
    write_mv_dataset,
)
from facelift_nb.layouts import get_layout
from facelift_nb.synthetic import make_subject, render_views

PERM = [4, 1, 5, 0, 3, 2]  # rig order: the cameras are not in slot order


def _capture(subject, seed=0, res=(90, 96)):
    "A jittered 6-camera rig around `subject` (FaceLift world, OpenCV, rig order), its RGBA renders, the user's rig."
    g = torch.Generator().manual_seed(seed)
    lay = get_layout("facelift6")
    jitter = torch.rand(6, generator=g, dtype=torch.float64) - 0.5
    az = torch.tensor(lay.azimuths_deg, dtype=torch.float64) + 4 * jitter
    el = 6 * (torch.rand(6, generator=g, dtype=torch.float64) - 0.5)
    dist = 2.7 * (1 + 0.08 * (torch.rand(6, generator=g, dtype=torch.float64) - 0.5))
    centers = (orbit_directions(az, el) * dist[:, None])[PERM]
    aim = 0.06 * (torch.rand(6, 3, generator=g, dtype=torch.float64) - 0.5)
    K = torch.tensor([[82., 0, res[1] / 2 + 3], [0, 82., res[0] / 2 - 2], [0, 0, 1]],
                     dtype=torch.float64).expand(6, 3, 3)
    rig = Cameras.from_c2w(look_at(centers, aim, (0., 0., 1.), dtype=torch.float64), K, res)
    rgba = render_views(subject, rig.to(dtype=torch.float32))
    # the user's file: Y-up world in millimetres, arena origin elsewhere, OpenGL camera axes
    world = torch.diag(torch.tensor([1000., 1000, 1000, 1], dtype=torch.float64)) @ torch.tensor(
        [[1., 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    world[:3, 3] = torch.tensor([420., 75., -260.], dtype=torch.float64)
    gl = rig.transform(world).to_opengl()
    return rgba, Cameras.from_opengl(gl, K, res), rig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    samples = []
    for i, kind in enumerate(("mouse", "head")):
        rgba, user_rig, _ = _capture(make_subject(100 + i, kind, density=0.6), seed=i)
        norm = normalize_rig(user_rig, masks=rgba[..., 3], front_camera=PERM.index(0))
        assert norm.fits_volume
        rep = reproject_to_layout(rgba[..., :3], rgba[..., 3], norm.cameras, "facelift6", size=64)
        assert list(rep.indices) == [PERM.index(j) for j in range(6)]
        # rig jitter (±2° azimuth, ±3° elevation) + the silhouette centre sitting below the subject origin
        assert max(rep.residuals_deg) < 8
        samples.append(PreparedSample.from_reprojection(f"s{i}", rep, source={"rig": f"capture {i}"},
                                                        normalization=norm))
    mv = write_mv_dataset(root / "mv", samples, "facelift6", size=64)
    gs = write_gslrm_dataset(root / "gslrm", samples, size=64)
    return root, mv, gs, samples


def test_recovers_the_canonical_layout(prepared):
    root, mv, gs, samples = prepared
    canon = get_layout("facelift6").cameras(hw=(64, 64)).to(dtype=torch.float64)
    for s in samples:
        ang = torch.rad2deg(torch.acos((torch.nn.functional.normalize(s.cameras.centers, dim=-1) *
                                        torch.nn.functional.normalize(canon.centers, dim=-1)).sum(-1).clamp(-1, 1)))
        assert ang.max() < 8  # each slot within the rig jitter (+ centre shift) of its canonical direction
        assert (s.cameras.centers.norm(dim=-1) - 2.7).abs().max() < 0.15
        fwd = s.cameras.c2w[:, :3, 2]
        to_subject = torch.nn.functional.normalize(-s.cameras.centers, dim=-1)
        assert (to_subject * fwd).sum(-1).min() > 0.9999  # look at the subject
        assert torch.allclose(s.cameras.K, canon.K, atol=1e-6)  # the layout's intrinsics
    for r in (check_dataset(mv), check_dataset(gs)):
        assert r.ok, str(r)
    man = json.loads((mv / "dataset.json").read_text())
    assert man["kind"] == "mvdiffusion" and man["layout"]["names"][1] == "front_right"
    ops = [t["op"] for t in man["samples"]["s0"]["transforms"]]
    assert ops == ["normalize_rig", "reproject_to_layout", "resize"]
    assert man["samples"]["s1"]["source"] == {"rig": "capture 1"}
    want = [f"cam_{j:03d}.png" for j in range(6)] + ["opencv_cameras.json"]
    assert sorted(p.name for p in (mv / "s0").iterdir()) == want
    assert (gs / "s0" / "images" / "cam_005.png").is_file() and (gs / "train.txt").read_text() == "s0\ns1\n"
    with pytest.raises(FileExistsError):
        write_mv_dataset(mv, samples, "facelift6", size=64)


def test_the_written_sets_train(prepared):
    from facelift_nb.train.gslrm import GSLRMDataset
    from facelift_nb.train.mvdiffusion import MVDataset
    root, mv, gs, _ = prepared
    assert len(MVDataset(mv / "train.txt", "facelift6", image_size=32)) == 2
    assert GSLRMDataset(gs / "train.txt", num_input=4, num_target=6, image_size=32)[0]["images"].shape == (6, 3, 32, 32)


def _copy(prepared, tmp_path, which="mv"):
    root, mv, gs, _ = prepared
    return shutil.copytree(mv if which == "mv" else gs, tmp_path / which)


def _problems(report, name="s0"):
    return " | ".join(next(s for s in report.samples if s.name == name).problems)


def test_mirrored_camera_is_reported(prepared, tmp_path):
    d = _copy(prepared, tmp_path)
    p = d / "s0" / "opencv_cameras.json"
    js = json.loads(p.read_text())
    js["frames"][2]["w2c"][0] = [-v for v in js["frames"][2]["w2c"][0]]  # x axis flipped: a mirrored camera
    p.write_text(json.dumps(js))
    r = check_dataset(d)
    assert not r.ok and "mirrored" in _problems(r) and next(s for s in r.samples if s.name == "s1").ok


def test_stale_intrinsics_after_resize_are_reported(prepared, tmp_path):
    d = _copy(prepared, tmp_path)
    for f in (d / "s1").glob("cam_*.png"):
        with Image.open(f) as im: im.resize((48, 48)).save(f)  # images resized, cameras left at 64²
    r = check_dataset(d)
    assert "images are 48x48 but the cameras say 64x64" in _problems(r, "s1")
    # the other half of the mistake: w/h updated but fx/cx kept
    d2 = _copy(prepared, tmp_path, "gslrm")
    p = d2 / "s0" / "opencv_cameras.json"
    js = json.loads(p.read_text())
    for fr in js["frames"]: fr["w"] = fr["h"] = 32
    p.write_text(json.dumps(js))
    for f in (d2 / "s0" / "images").glob("*.png"):
        with Image.open(f) as im: im.resize((32, 32)).save(f)
    assert "principal point" in _problems(check_dataset(d2))


def test_wrong_view_order_is_reported(prepared, tmp_path):
    d = _copy(prepared, tmp_path)
    s = d / "s0"
    cams = Cameras.from_facelift_json(s / "opencv_cameras.json")
    order = [0, 5, 2, 3, 4, 1]  # front_right and front_left swapped, images and cameras together (rig order written)
    tmp = {j: (s / f"cam_{j:03d}.png").read_bytes() for j in range(6)}
    for j, src in enumerate(order): (s / f"cam_{j:03d}.png").write_bytes(tmp[src])
    Cameras(cams.K[order], cams.w2c[order], cams.hw, meta=cams.meta).to_facelift_json(s / "opencv_cameras.json")
    r = check_dataset(d)
    assert "views in the wrong order" in _problems(r)
    assert "slot front_right holds the view of front_left" in _problems(r)


def test_subject_outside_the_volume_and_off_centre_are_reported(tmp_path):
    big = make_subject(7, "head", density=0.5)
    # a subject too large for the volume
    big = type(big)(big.means * 1.8, big.quats, big.scales * 1.8, big.opacities, big.sh)
    off = make_subject(8, "mouse", density=0.5)
    # not centred
    off = type(off)(off.means + torch.tensor([0.35, 0.2, 0.]), off.quats, off.scales, off.opacities, off.sh)
    cams = get_layout("facelift6").cameras(hw=(64, 64))
    samples = [PreparedSample(n, v[..., :3].permute(0, 3, 1, 2), v[..., 3], cams) for n, v in
               (("big", render_views(big, cams)), ("off", render_views(off, cams)))]
    moved = make_subject(9, "head", density=0.5)
    moved = type(moved)(moved.means + torch.tensor([0.8, 0., 0.]), moved.quats, moved.scales, moved.opacities,
                        moved.sh)  # 0.8 along x: out of the box
    v = render_views(moved, cams)
    samples.append(PreparedSample("moved", v[..., :3].permute(0, 3, 1, 2), v[..., 3], cams))
    r = check_dataset(write_mv_dataset(tmp_path / "mv", samples, "facelift6", size=64))
    assert "outside GS-LRM's working volume" in _problems(r, "big")
    assert "subject not centred" in _problems(r, "off")
    assert "outside GS-LRM's working volume" in _problems(r, "moved")
    hb = next(s for s in r.samples if s.name == "moved").hull_bounds
    assert hb[0][1] > 1.0 and abs(hb[1][0] + hb[1][1]) < 0.3  # the hull moved along x only


def test_gslrm_depth_range_is_the_models():
    import inspect

    from facelift_nb.data import GSLRM_DEPTH_RANGE
    from facelift_nb.models.gslrm import GSLRM
    assert GSLRM_DEPTH_RANGE == inspect.signature(GSLRM.__init__).parameters["depth_range"].default


def test_missing_or_trivial_alpha_is_reported(prepared, tmp_path):
    d = _copy(prepared, tmp_path)
    with Image.open(d / "s0" / "cam_003.png") as im: im.convert("RGB").save(d / "s0" / "cam_003.png")
    with Image.open(d / "s1" / "cam_001.png") as im:
        full = im.copy()
        full.putalpha(255)
        full.save(d / "s1" / "cam_001.png")
    r = check_dataset(d)
    assert "cam_003.png: no alpha channel" in _problems(r, "s0")
    assert "cam_001.png: alpha is (almost) full" in _problems(r, "s1")
    (d / "s1" / "cam_004.png").unlink()
    assert "missing" in _problems(check_dataset(d), "s1")


def test_cli_check_data_exit_codes(prepared, tmp_path):
    root, mv, gs, _ = prepared
    ok = subprocess.run([sys.executable, "-m", "facelift_nb", "check-data", str(mv)], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0 and "2/2 samples pass" in ok.stdout, ok.stderr
    d = _copy(prepared, tmp_path)
    with Image.open(d / "s0" / "cam_003.png") as im: im.convert("RGB").save(d / "s0" / "cam_003.png")
    bad = subprocess.run([sys.executable, "-m", "facelift_nb", "check-data", str(d)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "no alpha channel" in bad.stdout
    none = subprocess.run([sys.executable, "-m", "facelift_nb", "check-data", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)
    assert none.returncode == 2 and "no dataset" in none.stderr


def test_input_errors():
    cams = get_layout("facelift6").cameras(hw=(16, 16))
    with pytest.raises(ValueError, match="must be \\[V=6, 3, 16, 16\\]"):
        reproject_to_layout(torch.rand(6, 3, 8, 8), torch.rand(6, 8, 8), cams)
    with pytest.raises(ValueError, match="share the source centres"):
        warp_to_camera(torch.rand(6, 3, 16, 16), cams, get_layout("uniform6").cameras(hw=(16, 16)))
    with pytest.raises(ValueError, match="view order is never guessed"):
        (lambda d: check_dataset(d))(_bare_mv(cams))


def _bare_mv(cams):
    import tempfile
    from pathlib import Path
    d = Path(tempfile.mkdtemp()) / "s"
    d.mkdir()
    Image.new("RGBA", (16, 16)).save(d / "cam_000.png")
    return d


@pytest.mark.reference
def test_published_samples_pass_and_broken_copies_fail(tmp_path):
    "The published samples pass unchanged (Python and CLI); copies with one classic mistake each fail, naming it."
    from facelift_nb.testing import reference_path
    gs = reference_path("facelift_data_sample", "gslrm", "sample_000")
    mv = reference_path("facelift_data_sample", "mvdiffusion", "sample_000")
    r = check_dataset(gs)
    assert r.ok, str(r)
    s = r.samples[0]
    assert s.outside_fraction == 0 and s.agreement > 0.99
    assert s.center[2] > -0.3  # the hull's centre is near the head's, not 0.45 below the origin like the mask centroids
    assert check_dataset(mv, layout="facelift6").ok
    for args in ([str(gs)], [str(mv), "--layout", "facelift6"]):
        cli = subprocess.run([sys.executable, "-m", "facelift_nb", "check-data", *args], capture_output=True, text=True,
                             timeout=300)
        assert cli.returncode == 0 and "1/1 samples pass" in cli.stdout, cli.stdout + cli.stderr

    def broken(name, src=gs):
        return shutil.copytree(src, tmp_path / name)

    def edit_cameras(d, fn):
        js = json.loads((d / "opencv_cameras.json").read_text())
        fn(js["frames"])
        (d / "opencv_cameras.json").write_text(json.dumps(js))

    d = broken("mirrored")
    edit_cameras(d, lambda fr: fr[7].__setitem__("w2c", [[-v for v in fr[7]["w2c"][0]]] + fr[7]["w2c"][1:]))
    assert "mirrored" in _problems(check_dataset(d), "mirrored")
    d = broken("order")
    a, b = d / "images" / "cam_000.png", d / "images" / "cam_008.png"
    tmp = a.read_bytes()  # two views a quarter turn apart swapped
    a.write_bytes(b.read_bytes())
    b.write_bytes(tmp)
    p = _problems(check_dataset(d), "order")
    assert "disagree with the others" in p and "[0," in p and "8" in p
    d = broken("stale")
    for f in (d / "images").glob("*.png"):
        with Image.open(f) as im: im.resize((256, 256)).save(f)  # images resized, cameras left at 512²
    assert "images are 256x256 but the cameras say 512x512" in _problems(check_dataset(d), "stale")
    d = broken("noalpha")
    with Image.open(d / "images" / "cam_004.png") as im: im.convert("RGB").save(d / "images" / "cam_004.png")
    assert "cam_004.png: no alpha channel" in _problems(check_dataset(d), "noalpha")
    d = broken("moved")  # the subject 0.8 off along x: every camera (and so the world) shifted the other way
    def shift(frames):
        for f in frames:
            for k in range(3): f["w2c"][k][3] += 0.8 * f["w2c"][k][0]
    edit_cameras(d, shift)
    assert "outside GS-LRM's working volume" in _problems(check_dataset(d), "moved")
    d = broken("mv_noalpha", mv)
    with Image.open(d / "cam_002.png") as im: im.convert("RGB").save(d / "cam_002.png")
    assert "cam_002.png: no alpha channel" in _problems(check_dataset(d, layout="facelift6"), "mv_noalpha")
