"""The procedural subjects and datasets: deterministic, inside the working volume, readable by both training readers."""
import json

import pytest
import torch

from facelift_nb.layouts import get_layout
from facelift_nb.synthetic import (
    SUBJECT_KINDS,
    gslrm_rig,
    load_spec,
    make_dataset,
    make_subject,
    render_views,
    subject_seed,
)


def test_subjects_are_deterministic_and_distinct():
    a, b = make_subject(11), make_subject(11)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("means", "scales", "sh"))
    assert not torch.equal(make_subject(12, "head").sh, make_subject(13, "head").sh)
    for kind in SUBJECT_KINDS:
        for seed in range(6):
            g = make_subject(seed, kind)
            assert (g.means.abs().amax(0) <= torch.tensor([0.91, 0.91, 1.0])).all(), (kind, seed)
            assert g.sh_degree == 0 and len(g) > 3000


def test_front_and_back_differ_and_views_are_rgba():
    cams = get_layout("facelift6").cameras(hw=(48, 48))
    for kind in SUBJECT_KINDS:
        v = render_views(make_subject(5, kind), cams)
        assert v.shape == (6, 48, 48, 4) and 0 <= float(v.min()) and float(v.max()) <= 1
        cover = (v[..., 3] > 0.5).float().mean((1, 2))
        assert (cover > 0.04).all() and (cover < 0.7).all()
        front, back = v[0, ..., :3] * v[0, ..., 3:], v[3, ..., :3] * v[3, ..., 3:]
        assert (front - back.flip(1)).abs().mean() > 0.02  # the back is not the mirrored front: view order is visible


def test_dataset_layout_and_regeneration(tmp_path):
    kw = dict(n_subjects=3, layout="uniform4", mv_size=24, gslrm_size=24, n_gslrm_views=7, n_val=1, seed=5, density=0.3,
              progress=False)
    a = make_dataset(tmp_path / "a", **kw)
    b = make_dataset(tmp_path / "b", **kw)
    for p in sorted(a.rglob("*.png")):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes(), p  # bit-identical from the seed
    assert sorted(p.name for p in (a / "mv" / "sample_00000").iterdir()) == [f"cam_{j:03d}.png" for j in range(4)]
    cams = json.loads((a / "gslrm" / "sample_00002" / "opencv_cameras.json").read_text())
    assert len(cams["frames"]) == 7 and cams["frames"][6]["file_path"] == "images/cam_006.png"
    assert (a / "mv_val.txt").read_text() == "mv/sample_00002\n" \
        and (a / "gslrm_train.txt").read_text().count("\n") == 2
    spec = load_spec(a)
    assert spec.layout["label"] == "uniform4" and spec.seed == 5 and subject_seed(5, 2) == 5 * 1_000_003 + 2
    rig = gslrm_rig("uniform4", 7, 24, seed=subject_seed(5, 2))
    assert torch.allclose(rig.w2c[:4], get_layout("uniform4").cameras(hw=(24, 24)).w2c, atol=1e-6)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="n_val"):
        make_dataset(tmp_path / "x", 2, n_val=2, progress=False)
    with pytest.raises(ValueError, match="kinds"):
        make_dataset(tmp_path / "y", 2, kinds=("cat",), progress=False)
    with pytest.raises(ValueError, match="at least the layout"):
        gslrm_rig("facelift6", n=4)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_spec(tmp_path)
