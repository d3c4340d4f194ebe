"""facelift_nb.evaluate: view scores, one reconstruction against its baselines, the layout study (shared held-out
views, bootstrap intervals, resumability, `mv` mode) and the `layout-study` command. Tiny sizes throughout."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facelift_nb.cameras import Cameras, orbit
from facelift_nb.cli import main
from facelift_nb.evaluate import (
    AUTO_HELD_OUT,
    FolderSample,
    SyntheticSample,
    bootstrap_ci,
    evaluate_reconstruction,
    evaluate_views,
    held_out_views,
    layout_study,
    load_study,
    view_angles,
)
from facelift_nb.layouts import ViewLayout, get_layout, layout_stats
from facelift_nb.metrics import LPIPS, lpips_backbone, psnr, ssim
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.models.mvdiffusion import MVDiffusionPipeline
from facelift_nb.synthetic import gslrm_rig, make_subject, render_views, save_rgba

NONUNIFORM = ViewLayout.from_azimuths([0., 30., 90., 180., 270., 330.], [0., 0., 0., 20., 0., 0.], label="nonuniform6")
HELD = orbit([22.5, 160., 250.], [0., 20., 0.], names=["a", "b", "c"])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GSLRM(**GSLRM.tiny_config()).eval()


def small(seed=3):
    return SyntheticSample(seed, density=0.2)


def folder_sample(folder: Path, n: int = 12, size: int = 32) -> Path:
    "A GS-LRM sample folder: facelift6's slots, then random views (as `make_dataset` writes them)."
    rig = gslrm_rig("facelift6", n=n, size=size, seed=0)
    rig = Cameras(rig.K, rig.w2c, rig.hw, meta=tuple({"file_path": f"images/cam_{j:03d}.png"} for j in range(n)))
    for j, im in enumerate(render_views(make_subject(0, "head", 0.2), rig)):
        save_rgba(im, folder / "images" / f"cam_{j:03d}.png")
    rig.to_facelift_json(folder / "opencv_cameras.json")
    return folder


def test_evaluate_views_matches_the_metrics():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(2, 3, 24, 24, generator=g)
    p = (t + 0.05 * torch.randn(t.shape, generator=g)).clamp(0, 1)
    m = (torch.rand(2, 24, 24, generator=g) > 0.5).float()
    r = evaluate_views(p, t, mask=m, names=["x", "y"])
    np.testing.assert_allclose(r.scores["psnr"], psnr(p, t).tolist(), rtol=1e-6)
    np.testing.assert_allclose(r.scores["ssim_fg"], ssim(p, t, m).tolist(), rtol=1e-6)
    assert [row["view"] for row in r.rows()] == ["x", "y"]
    assert r.to_csv().splitlines()[0] == "view,psnr,ssim,psnr_fg,ssim_fg"


def test_lpips_column_when_asked():
    model = LPIPS("alex", backbone_state_dict=lpips_backbone("alex").state_dict())  # random backbone: plumbing only
    t = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    r = evaluate_views(t, t, lpips_model=model)
    assert r.metrics[-1] == "lpips" and max(r.scores["lpips"]) < 1e-6


def test_view_angles_invert_orbit():
    az = [0., 10., 89., 181., 359.]
    el = [-30., 0., 15., 45., 5.]
    a, e = view_angles(orbit(az, el))
    np.testing.assert_allclose(a, az, atol=1e-4)
    np.testing.assert_allclose(e, el, atol=1e-4)


def test_auto_held_out_is_clear_of_the_studied_layouts():
    lays = [get_layout(n) for n in ("uniform4", "facelift6", "uniform8")] + [NONUNIFORM]
    slots = torch.cat([l.directions() for l in lays])
    held = AUTO_HELD_OUT.directions()
    worst = torch.rad2deg(torch.acos((held @ slots.T).clamp(-1, 1))).min()
    assert worst > 3, worst  # every held-out view is a new view for every layout
    assert layout_stats(AUTO_HELD_OUT).largest_azimuth_gap_deg <= 22.5


def test_nearest_baseline_is_exact_on_an_input_view(tiny, tmp_path):
    smp = folder_sample(tmp_path / "s")
    r = evaluate_reconstruction(tiny, smp, [0, 1, 2, 3], [2, 7])
    assert r.nearest.scores["psnr"][0] == pytest.approx(100.)  # view 2 is an input: re-used exactly
    assert r.nearest.scores["psnr"][1] < 100 and r.background.scores["mask_iou"] == (0., 0.)
    assert r.model.views == ("view_002", "view_007")


def test_folder_study_shares_held_out_views(tiny, tmp_path):
    smp = FolderSample(folder_sample(tmp_path / "s"), 32)
    held = held_out_views(smp, ["facelift6", "uniform4"], size=32)
    assert held.names == tuple(f"view_{i:03d}" for i in range(6, 12))
    res = layout_study(tiny, [smp], ["facelift6", "uniform4"])
    views = {l: {r["view"] for r in res.rows if r["layout"] == l} for l in ("facelift6", "uniform4")}
    assert views["facelift6"] == views["uniform4"] == set(held.names)
    assert all(run["max_residual_deg"] < 1e-3 for run in res.runs)  # the rig holds facelift6's slots exactly


def test_study_resumes_and_refuses_another_study(tiny, tmp_path):
    kw = dict(layouts=["uniform4", NONUNIFORM], held_out=HELD, out=tmp_path / "o")
    res = layout_study(tiny, [small(3), small(4)], **kw)
    assert len(res.rows) == 2 * 2 * 3 and {r["layout"] for r in res.rows} == {"uniform4", "nonuniform6"}
    pair = tmp_path / "o" / "pairs" / "uniform4__synthetic_3.json"
    rec = json.loads(pair.read_text())
    rec["rows"][0]["model_psnr"] = 99.  # a kept pair is read back, not recomputed
    pair.write_text(json.dumps(rec))
    again = layout_study(tiny, [small(3), small(4)], **kw)
    assert again.rows[0]["model_psnr"] == 99. and again.rows[1:] == res.rows[1:]
    assert load_study(tmp_path / "o").rows == again.rows
    summ = {(r["layout"], r["method"], r["metric"]): r for r in again.summary()}
    s = summ[("uniform4", "model", "psnr")]
    assert s["n_samples"] == 2 and s["ci_low"] <= s["mean"] <= s["ci_high"]
    with pytest.raises(ValueError, match="different study"):
        layout_study(tiny, [small(3)], layouts=["uniform4"], held_out=HELD, out=tmp_path / "o")


def test_bootstrap_is_seeded_and_covers():
    x = np.random.default_rng(0).normal(10, 1, 40)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    m, lo, hi = bootstrap_ci(x)
    assert lo < 10 < hi and hi - lo < 1.


def test_mv_mode_generates_per_layout(tiny):
    pipes = {"uniform4": MVDiffusionPipeline.tiny("uniform4"), "nonuniform6": MVDiffusionPipeline.tiny(NONUNIFORM)}
    res = layout_study(tiny, [small()], ["uniform4", NONUNIFORM], held_out=HELD, mv=pipes, num_inference_steps=1)
    assert len(res.rows) == 6 and "nearest_mask_iou" not in res.rows[0]
    with pytest.raises(ValueError, match="trained for it"):
        evaluate_reconstruction(tiny, small(), "uniform4", HELD, mv=pipes["nonuniform6"], num_inference_steps=1)


def test_cli_default_study_and_resume(tmp_path, capsys):
    lay = tmp_path / "nonuniform6.json"
    lay.write_text(json.dumps(NONUNIFORM.to_dict()))
    argv = ["layout-study", "--default", "--subjects", "1", "--layouts", "uniform4", str(lay),
            "-o", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "nonuniform6" in out and "psnr_by_azimuth.png" in out
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"study.json", "summary.csv", "psnr_per_layout.png", "ssim_by_azimuth.png", "pairs"} <= names
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "o" / "pairs").iterdir()}
    assert main(argv) == 0  # resumed: the pairs are kept as they were
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o" / "pairs").iterdir()} == before


def test_cli_folder_samples_with_a_checkpoint(tiny, tmp_path, capsys):
    for i in range(2): folder_sample(tmp_path / "data" / f"s{i}")
    tiny.save_pretrained(tmp_path / "ck")
    assert main(["layout-study", str(tmp_path / "data"), "--gslrm", str(tmp_path / "ck"), "--layouts", "facelift6",
                 "uniform4", "-o", str(tmp_path / "o")]) == 0
    res = load_study(tmp_path / "o")
    assert {r["sample"] for r in res.rows} == {"s0", "s1"} and len(res.runs) == 4


@pytest.mark.slow
def test_builtin_layout_study_small(tmp_path):
    "The notebook's study on 2 of the built-in model's held-out subjects: every layout scored, facelift6 as its card."
    from facelift_nb.builtin import WEIGHTS_DIR
    from facelift_nb.evaluate import builtin_held_out_samples, paired_differences, save_study_figures
    from facelift_nb.pipeline import load_gslrm
    gslrm = load_gslrm(WEIGHTS_DIR / "gslrm")[0]
    res = layout_study(gslrm, builtin_held_out_samples(2), ["uniform4", "facelift6", "uniform8", NONUNIFORM],
                       out=tmp_path / "o", filters=None)
    summ = {(r["layout"], r["method"], r["metric"]): r["mean"] for r in res.summary()}
    assert summ[("facelift6", "model", "psnr")] > 25  # the card: 28.07 dB on 40 subjects (other held-out views)
    assert all(summ[(l.label, "model", "psnr")] > summ[(l.label, "background", "psnr")] + 8 for l in res.layouts)
    assert {d["layout"] for d in paired_differences(res, "facelift6")} == {l.label for l in res.layouts}
    assert len(save_study_figures(res, tmp_path / "o")) == 2
