"""Face-box framing (the published FaceLift input framing): the placement maths with a stand-in detector, the
errors (no face, no cut-out), the pipeline's defaults and manifest, and the published front view re-framed from a
smaller copy."""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.framing import (
    FACE_CANVAS,
    FACE_CENTER,
    FACE_SIZE,
    HAAR_CALIBRATION,
    BoxCalibration,
    cut_out,
    detect_face,
    frame_face,
    place_face,
)
from facelift_nb.pipeline import FaceLiftPipeline, frame_subject, load_input
from facelift_nb.testing import reference_path


def _published_placement(box, W, H):
    "The published crop_face arithmetic, written out independently: (scaled size, integer shift)."
    x0, y0, x1, y1 = box
    s = FACE_SIZE / (0.5 * (x1 - x0 + y1 - y0))
    c = (int(0.5 * (x0 + x1) * s), int(0.5 * (y0 + y1) * s))
    off = (FACE_CENTER[0] - c[0], FACE_CENTER[1] - c[1])
    # paste at int(max(0, off)), crop from int(max(0, -off)): the image moves by int(off) toward zero
    return (int(W * s), int(H * s)), tuple(int(max(0, o)) - int(max(0, -o)) for o in off)


@pytest.mark.parametrize("box,hw", [((150, 100, 210, 160), (300, 400)), ((12.5, 40.25, 300.75, 333.5), (480, 360)),
                                    ((600, 900, 700, 1010), (2000, 1500)), ((5, 3, 25, 27), (64, 64))])
def test_placement_matches_the_published_arithmetic(box, hw):
    H, W = hw
    p = place_face(box, hw)
    want_wh, want_shift = _published_placement(box, W, H)
    T = p.transform()
    assert p.scaled_wh == want_wh and (T.tx, T.ty) == want_shift and T.out_hw == (FACE_CANVAS, FACE_CANVAS)
    c = T.points(torch.tensor([[box[0], box[1]], [box[2], box[3]]], dtype=torch.float64))
    assert torch.allclose(c.mean(0), torch.tensor(FACE_CENTER, dtype=torch.float64), atol=2.0)
    assert abs((c[1] - c[0]).mean().item() - FACE_SIZE) < 0.01 * FACE_SIZE


def test_fake_detector_box_lands_at_the_published_centre_and_size():
    photo = torch.full((3, 300, 360), 0.7)
    photo[:, 60:180, 90:210] = 0.05  # the "face"
    box = (90, 60, 210, 180)
    fr = frame_face(photo, torch.ones(300, 360), detector=lambda img: [box, (0, 0, 30, 30)])
    ys, xs = torch.nonzero(fr.image[0] < 0.3, as_tuple=True)
    x0, y0 = fr.transform.points(torch.tensor([90., 60.])).tolist()
    assert abs(xs.min().item() - x0) <= 1 and abs(ys.min().item() - y0) <= 1  # the pixels follow the recorded map
    cx, cy = (xs.min() + xs.max() + 1).item() / 2, (ys.min() + ys.max() + 1).item() / 2
    assert abs(cx - FACE_CENTER[0]) <= 2 and abs(cy - FACE_CENTER[1]) <= 2
    assert abs((xs.max() + 1 - xs.min()).item() - FACE_SIZE) <= 2
    assert fr.face.n_faces == 2 and fr.face.box == tuple(map(float, box))  # the largest, as given by a custom detector
    rec = fr.record()
    assert rec["scale"] == pytest.approx(FACE_SIZE / 120) and rec["mask"] == "alpha/mask"
    assert rec["target"]["canvas"] == 512
    small = frame_face(photo, torch.ones(300, 360), size=64, detector=lambda img: [box])
    assert small.image.shape == (3, 64, 64) and small.transform.sx == pytest.approx(fr.transform.sx / 8)
    # the same framing through frame_subject / fill="face"
    framed, T = frame_subject(photo, torch.ones(300, 360), 512, "face", detector=lambda img: [box])
    direct = frame_face(photo, torch.ones(300, 360), detector=lambda img: [box])
    assert torch.equal(framed, direct.image) and T.sx == fr.transform.sx


def test_calibration_maps_boxes():
    assert BoxCalibration()((1, 2, 30, 40)) == (1., 2., 30., 40.)
    x0, y0, x1, y1 = HAAR_CALIBRATION((100, 100, 200, 200))
    assert (x1 - x0) == pytest.approx(100 * HAAR_CALIBRATION.size_factor)
    want = (150 + 100 * HAAR_CALIBRATION.dx, 150 + 100 * HAAR_CALIBRATION.dy)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx(want)


def test_no_face_raises_with_the_alternatives():
    with pytest.raises(ValueError, match="no face found.*fill=0.85.*crop"):
        detect_face(torch.ones(3, 200, 200))
    with pytest.raises(ValueError, match="no face found"):
        frame_subject(torch.rand(3, 96, 96), torch.ones(96, 96), 64, "face")


def test_missing_cut_out_says_how_to_pass_a_mask(monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", None)  # as on an install without the optional extra
    for call in (lambda: cut_out(torch.rand(3, 64, 64)), lambda: frame_face(torch.rand(3, 64, 64)),
                 lambda: frame_subject(torch.rand(3, 64, 80), None, 32, "face"),
                 lambda: load_input(np.zeros((64, 64, 3), np.uint8), remove_background=True)):
        with pytest.raises(ImportError, match=r"pass `mask=`.*RGBA.*facelift-nb\[rembg\].*downloaded"):
            call()


def test_fill_values_and_defaults():
    for bad in ("faces", "model", -1, 2.0, True):
        with pytest.raises(ValueError, match='"face"'):
            frame_subject(torch.rand(3, 64, 64), torch.ones(64, 64), 32, fill=bad)
    with pytest.warns(UserWarning):
        pipe = FaceLiftPipeline.tiny()
    assert pipe.fill == 0.85  # tiny random weights: a generic mask framing
    with pytest.raises(ValueError, match='"model".*"face"'):
        pipe(torch.rand(3, 64, 64), fill="faces", progress=False)
    FaceLiftPipeline(pipe.mvdiffusion, pipe.gslrm, fill="face")  # accepted by the constructor
    import inspect
    assert inspect.signature(FaceLiftPipeline.from_pretrained).parameters["fill"].default == "face"


def test_pipeline_manifest_records_the_face_box(monkeypatch, tmp_path):
    "fill='face' in the pipeline: the framing, detector box and calibrated box reach the manifest (stand-in detector)."
    import facelift_nb.framing as fm
    box = np.array([[40., 30., 100., 90.]])
    monkeypatch.setattr(fm, "haar_face_boxes", lambda img: box)
    with pytest.warns(UserWarning):
        pipe = FaceLiftPipeline.tiny()
    rgba = np.zeros((128, 160, 4), np.uint8)
    rgba[20:120, 30:110] = (200, 150, 120, 255)
    out = pipe(rgba, fill="face", num_inference_steps=1, turntable_frames=0, progress=False, render_size=16)
    fr = out.manifest["framing"]
    assert fr["method"] == "face" and out.manifest["settings"]["fill"] == "face" and fr["mask"] == "alpha/mask"
    assert fr["face"]["box"] == pytest.approx(HAAR_CALIBRATION(tuple(box[0])))
    assert fr["face"]["detector_box"] == tuple(box[0])
    assert fr["scale"] == pytest.approx(FACE_SIZE / (60 * HAAR_CALIBRATION.size_factor)) and len(fr["offset"]) == 2
    import json
    man = json.loads((out.save(tmp_path / "r") / "manifest.json").read_text())
    assert man["framing"]["face"]["detector"].startswith("opencv-haar")
    assert man["framing"]["target"]["face_size"] == FACE_SIZE
    mask_out = pipe(rgba, fill=0.85, num_inference_steps=1, turntable_frames=0, progress=False, render_size=16)
    assert mask_out.manifest["framing"]["method"] == "mask" and "face" not in mask_out.manifest["framing"]


def _mask_stats(m: np.ndarray):
    "sqrt(area) and centroid (x, y) of a boolean mask."
    ys, xs = np.nonzero(m)
    return np.sqrt(m.sum()), np.array([xs.mean(), ys.mean()])


@pytest.mark.reference
def test_published_front_view_comes_back_from_a_smaller_copy():
    "cam_000 (training framing) shrunk to 0.6 and moved on an 800² canvas: face framing restores scale and position."
    src = Image.open(reference_path("facelift_data_sample/mvdiffusion/sample_000/cam_000.png")).convert("RGBA")
    n = round(512 * 0.6)
    big = Image.new("RGBA", (800, 800), (0, 0, 0, 0))
    big.paste(src.resize((n, n), Image.Resampling.BICUBIC), (371, 123))
    x = torch.from_numpy(np.asarray(big).copy()).permute(2, 0, 1).float() / 255
    fr = frame_face(x[:3], x[3])
    assert fr.face.detector.startswith("opencv-haar") and fr.face.n_faces >= 1
    # the map from the original view to the output is (close to) the identity
    s = fr.transform.sx * n / 512
    assert abs(s - 1) < 0.04, f"scale {s:.3f}"
    c = fr.transform.points(torch.tensor([371 + 256 * n / 512, 123 + 256 * n / 512]))
    assert (c - 256).abs().max() < 8, f"the original centre lands at {c.tolist()}"
    # and the pixels agree: the foreground (non-white) masks have the same size and centroid
    a = np.asarray(src)[..., 3] > 127
    b = (fr.image.permute(1, 2, 0).numpy() < 0.96).any(-1)
    (sa, ca), (sb, cb) = _mask_stats(a), _mask_stats(b)
    assert abs(sb / sa - 1) < 0.04 and np.abs(cb - ca).max() < 8, (sb / sa, ca, cb)


def test_explicit_haar_detector_keeps_its_calibration_and_bad_detectors_are_named():
    from facelift_nb.framing import HAAR_CALIBRATION, detect_face, haar_face_boxes
    img = np.full((64, 64, 3), 255, np.uint8)
    box = (10., 12., 40., 42.)
    assert detect_face(img, lambda im: [box]).box == box  # another detector: no calibration unless given
    with pytest.raises(ValueError, match="must return boxes"):
        detect_face(img, lambda im: [1, 2, 3])
    fake_haar = lambda im: [box]
    assert detect_face(img, fake_haar, HAAR_CALIBRATION).box == HAAR_CALIBRATION(box)
    with pytest.raises(ValueError, match="no face found"):
        detect_face(img, haar_face_boxes)  # a blank image: the bundled cascade finds nothing


def test_pipeline_face_framing_needs_a_mask_unless_asked_to_cut_out():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = FaceLiftPipeline.tiny()
    rgb = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs the subject's mask"):
        pipe(rgb, fill="face", num_inference_steps=1, turntable_frames=0, progress=False)
