"""GS-LRM fine-tuning: dataset validation, a short CPU fine-tune that learns, exact checkpoints and resumption."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.models.gslrm import GSLRM
from facelift_nb.train.gslrm import (
    GSLRMDataset,
    GSLRMTrainConfig,
    check_sample,
    export_published_checkpoint,
    latest_gslrm_checkpoint,
    list_gslrm_checkpoints,
    sample_dirs,
    train_gslrm,
)

# `gslrm_sample` (conftest): a synthetic head rendered at the 32 cameras of the published training sample, 128² RGBA


@pytest.fixture
def make_cfg(gslrm_sample):
    "A `GSLRMTrainConfig` factory on the synthetic sample: the tiny model at 16²; keywords override."
    def make(tmp, **kw):
        base = dict(data=str(gslrm_sample), output_dir=str(tmp), model_config=GSLRM.tiny_config(), image_size=16,
                    num_input=6, num_target=6, max_steps=6, warmup_steps=1, lr=2e-3, checkpoint_every=3, keep_last=5)
        return GSLRMTrainConfig(**{**base, **kw})
    return make


def test_short_finetune_lowers_loss(make_cfg, tmp_path):
    res = train_gslrm(make_cfg(tmp_path, max_steps=30, checkpoint_every=30))
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))


def _weights(folder):
    return GSLRM.from_pretrained(folder).state_dict()


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_checkpoints_reload_exactly_and_resume(make_cfg, tmp_path):
    a = tmp_path / "a"
    res = train_gslrm(make_cfg(a))
    ckpts = list_gslrm_checkpoints(a / "checkpoints")
    assert [p.name for p in ckpts] == ["checkpoint-3", "checkpoint-6"]
    final = _weights(a / "final")
    _assert_same(final, _weights(ckpts[-1] / "gslrm"))  # the checkpoint holds exactly the trained weights
    assert res.published == a / "published" / "ckpt_0000000000000006.pt"
    pub = torch.load(res.published, weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "fwdbwd_pass_step", "param_update_step", "model_config"} <= set(pub)
    _assert_same(final, GSLRM.from_facelift_checkpoint(res.published).state_dict())
    # a second run that stopped at step 3, resumed from the Accelerate folder, ends bit-identical to the uninterrupted
    # run
    b = tmp_path / "b"
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpts[0], b / "checkpoints" / ckpts[0].name)
    res = train_gslrm(make_cfg(b, resume=True))
    assert [r["step"] for r in res.history] == [4, 5, 6]
    _assert_same(final, _weights(b / "final"))
    # ... and resumed from a published-format file (older runs, the published training code)
    c = tmp_path / "c"
    export_published_checkpoint(ckpts[0], c / "checkpoints" / "ckpt_0000000000000003.pt")
    res = train_gslrm(make_cfg(c, resume=True))
    assert [r["step"] for r in res.history] == [4, 5, 6]
    _assert_same(final, _weights(c / "final"))


def test_random_input_counts_train_and_resume_exactly(make_cfg, tmp_path, monkeypatch):
    from facelift_nb.train import gslrm as tg
    seen = []
    step = tg._gslrm_step
    monkeypatch.setattr(tg, "_gslrm_step", lambda *a: seen.append(a[-1]) or step(*a))
    a = tmp_path / "a"
    train_gslrm(make_cfg(a, num_input=(2, 5), num_target=6, max_steps=6))
    assert seen == [tg.step_input_count((2, 5), s, 0) for s in range(6)] and len(set(seen)) > 1, seen
    # stopped at step 3 and resumed: the same counts for steps 4..6 and bit-identical weights
    b = tmp_path / "b"
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "checkpoint-3", b / "checkpoints" / "checkpoint-3")
    seen.clear()
    train_gslrm(make_cfg(b, num_input=(2, 5), num_target=6, max_steps=6, resume=True))
    assert seen == [tg.step_input_count((2, 5), s, 0) for s in range(3, 6)]
    _assert_same(_weights(a / "final"), _weights(b / "final"))
    with pytest.raises(ValueError, match="most input views"):
        make_cfg(tmp_path, num_input=(2, 8), num_target=6)


def test_exact_layout_with_relative_output_dir(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_gslrm(make_cfg("runs/x", max_steps=2, checkpoint_every=2))
    tree = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_file() and "random_states" not in p.name)
    assert tree == ["runs/x/checkpoints/checkpoint-2/facelift_state.json",
                    "runs/x/checkpoints/checkpoint-2/gslrm/config.json",
                    "runs/x/checkpoints/checkpoint-2/gslrm/diffusion_pytorch_model.safetensors",
                    "runs/x/checkpoints/checkpoint-2/manifest.json",
                    "runs/x/checkpoints/checkpoint-2/optimizer.bin", "runs/x/checkpoints/checkpoint-2/scheduler.bin",
                    "runs/x/final/config.json", "runs/x/final/diffusion_pytorch_model.safetensors",
                    "runs/x/published/ckpt_0000000000000002.pt",
                    "runs/x/published/ckpt_0000000000000002.pt.manifest.json",
                    "runs/x/train_log.jsonl"]  # no doubled runs/x/runs/x/... anywhere


def test_fine_tune_from_weights(make_cfg, tmp_path):
    res = train_gslrm(make_cfg(tmp_path / "a", max_steps=3))
    res = train_gslrm(make_cfg(tmp_path / "b", max_steps=2, fine_tune_from=str(res.published)))
    assert [r["step"] for r in res.history] == [1, 2]  # fresh optimizer and step count
    res = train_gslrm(make_cfg(tmp_path / "c", max_steps=1, fine_tune_from=str(tmp_path / "a" / "final")))
    assert len(res.history) == 1


def test_rotation_moves_old_checkpoints_to_trash(make_cfg, tmp_path):
    train_gslrm(make_cfg(tmp_path, max_steps=4, checkpoint_every=1, keep_last=2))
    assert [p.name for p in list_gslrm_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-3", "checkpoint-4"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "trash").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    from facelift_nb.checkpoints import inspect_checkpoint, restore_checkpoint, verify_manifest
    assert verify_manifest(tmp_path / "checkpoints" / "checkpoint-4") == []  # sha256 of the written files
    info = inspect_checkpoint(tmp_path / "checkpoints" / "checkpoint-4")
    assert (info.kind, info.step, info.resumable, info.ok, info.config["width"]) \
        == ("gslrm-accelerate", 4, True, True, 64)
    back = restore_checkpoint(tmp_path / "checkpoints" / "trash" / "checkpoint-1")
    from facelift_nb.checkpoints import resume_problems
    assert resume_problems(back) == []


def test_latest_valid_skips_broken(make_cfg, tmp_path, caplog):
    train_gslrm(make_cfg(tmp_path, max_steps=3))
    ck = tmp_path / "checkpoints"
    good = list_gslrm_checkpoints(ck)[-1]
    trunc = shutil.copytree(good, ck / "checkpoint-99")
    w = trunc / "gslrm" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:-1000])  # truncated by a crash (header intact)
    (shutil.copytree(good, ck / "checkpoint-50") / "optimizer.bin").unlink()  # weights only
    (ck / "ckpt_0000000000000070.pt").write_bytes(b"not a checkpoint")
    assert latest_gslrm_checkpoint(ck) == good
    assert "truncated" in caplog.text and "weights only" in caplog.text and "does not load" in caplog.text
    res = train_gslrm(make_cfg(tmp_path, max_steps=4, resume=True))
    assert [r["step"] for r in res.history] == [4]


def test_export_refuses_broken_or_existing(make_cfg, tmp_path):
    res = train_gslrm(make_cfg(tmp_path, max_steps=1))
    with pytest.raises(FileExistsError):
        export_published_checkpoint(res.checkpoints[-1], res.published)
    (res.checkpoints[-1] / "scheduler.bin").unlink()
    with pytest.raises(ValueError, match="weights only"):
        export_published_checkpoint(res.checkpoints[-1], tmp_path / "x.pt")


def test_dataset_reports_broken_samples(gslrm_sample, tmp_path):
    root = tmp_path / "set"
    ok = shutil.copytree(gslrm_sample, root / "ok")
    missing = shutil.copytree(gslrm_sample, root / "missing")
    (missing / "images" / "cam_005.png").unlink()
    small = shutil.copytree(gslrm_sample, root / "small")
    Image.open(small / "images" / "cam_002.png").resize((64, 64)).save(small / "images" / "cam_002.png")
    rgb = shutil.copytree(gslrm_sample, root / "rgb")
    Image.open(rgb / "images" / "cam_007.png").convert("RGB").save(rgb / "images" / "cam_007.png")
    ds = GSLRMDataset(root, image_size=16)
    assert ds.dirs == [ok]
    assert "missing image images/cam_005.png" in ds.report[str(missing)][0]
    assert "64x64 but cameras say 128x128" in ds.report[str(small)][0]
    assert "no alpha channel" in ds.report[str(rgb)][0]
    (tmp_path / "list.txt").write_text("set/missing\n")
    with pytest.raises(ValueError, match="no usable samples"):
        GSLRMDataset(tmp_path / "list.txt", image_size=16)
    (tmp_path / "list2.txt").write_text(f"set/ok\n{root / 'small'}\n# a comment\n")
    assert sample_dirs(tmp_path / "list2.txt") == [tmp_path / "set" / "ok", root / "small"]
    with pytest.raises(FileNotFoundError):
        sample_dirs(tmp_path / "nowhere")
    assert check_sample(ok) == []


def test_dataset_items_and_errors(gslrm_sample):
    ds = GSLRMDataset(gslrm_sample, num_input=4, num_target=6, image_size=16, bg="black", input_views=[0, 8, 16, 24])
    it = ds[0]
    assert it["frames"][:4].tolist() == [0, 8, 16, 24] and len(set(it["frames"].tolist())) == 6
    assert it["images"].shape == (6, 3, 16, 16) and float(it["images"].min()) >= 0
    with pytest.raises(ValueError, match="bg"):
        GSLRMDataset(gslrm_sample, bg="grey")
    with pytest.raises(ValueError, match="targets include the inputs"):
        GSLRMDataset(gslrm_sample, num_input=6, num_target=4)
    with pytest.raises(ValueError, match="fewer than num_target"):
        GSLRMDataset(gslrm_sample, num_input=6, num_target=40, image_size=16)[0]


def test_yaml_config_and_cli(gslrm_sample, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {gslrm_sample}\noutput_dir: {tmp_path / 'run'}\n"
                   f"model_config: {json.dumps(GSLRM.tiny_config())}\n"
                   "image_size: 16\nnum_target: 6\nmax_steps: 1\nwarmup_steps: 1\ncheckpoint_every: 1\n"
                   "betas: [0.9, 0.95]\n")
    c = GSLRMTrainConfig.from_yaml(cfg)
    assert c.betas == (0.9, 0.95) and c.max_steps == 1
    r = subprocess.run([sys.executable, "-m", "facelift_nb", "train-gslrm", str(cfg)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained to step 1" in r.stdout
    assert list_gslrm_checkpoints(tmp_path / "run" / "checkpoints")
    (tmp_path / "bad.yaml").write_text("data: x\noutput_dir: y\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\]"):
        GSLRMTrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="mixed_precision"):
        GSLRMTrainConfig(data="x", output_dir="y", mixed_precision="fp8")


def test_random_crops_keep_images_and_intrinsics_together(gslrm_sample):
    full = GSLRMDataset(gslrm_sample, num_input=1, num_target=1, image_size=64, input_views=[0])
    crop = GSLRMDataset(gslrm_sample, num_input=1, num_target=1, image_size=64, input_views=[0],
                        random_crop=(0.5, 0.8), seed=3)
    a, c = full[0], crop[0]
    assert c["images"].shape == (1, 3, 64, 64) and not torch.equal(a["K"], c["K"])
    # project the world origin (the subject centre) with both cameras: it must land on the same image content
    def centre_pixel(item):
        K, w2c = item["K"][0].double(), item["w2c"][0].double()
        p = K @ w2c[:3, 3]
        return p[:2] / p[2]
    # the subject centre projects into the subject (alpha high) in every crop: image and K moved together
    for seed in range(5):
        it = GSLRMDataset(gslrm_sample, num_input=1, num_target=1, image_size=64, input_views=[0],
                          random_crop=(0.5, 0.8), seed=seed)[0]
        xc, yc = (int(v) for v in centre_pixel(it))
        assert 0 <= xc < 64 and 0 <= yc < 64 and it["alpha"][0, yc, xc] > 0.5
    x, y = (int(v) for v in centre_pixel(a))
    assert a["alpha"][0, y, x] > 0.5
    f_ratio = c["K"][0, 0, 0] / a["K"][0, 0, 0]
    assert 1 / 0.8 - 1e-3 <= f_ratio <= 1 / 0.5 + 1e-3
    with pytest.raises(ValueError, match="random_crop"):
        GSLRMDataset(gslrm_sample, random_crop=(0.9, 0.5))
    res = train_gslrm(GSLRMTrainConfig(data=str(gslrm_sample), output_dir=str(Path(tempfile.mkdtemp())),
                                       model_config=GSLRM.tiny_config(), image_size=16, num_target=6, max_steps=1,
                                       warmup_steps=1, random_crop=(0.6, 1.0)))
    assert np.isfinite(res.history[0]["loss"])


def test_checkpoints_carry_their_architecture(make_cfg, tmp_path):
    ck = train_gslrm(make_cfg(tmp_path, max_steps=1, checkpoint_every=1)).published
    obj = torch.load(ck, weights_only=True)
    assert obj["model_config"]["width"] == GSLRM.tiny_config()["width"] \
        and set(obj) >= {"model", "optimizer", "lr_scheduler", "param_update_step"}
    m = GSLRM.from_facelift_checkpoint(ck)  # no config needed
    assert m.config.num_layers == GSLRM.tiny_config()["num_layers"]
    from facelift_nb.checkpoints import inspect_checkpoint
    assert inspect_checkpoint(ck).config["width"] == GSLRM.tiny_config()["width"]


@pytest.mark.reference
def test_published_sample_reads_and_trains(tmp_path):
    "The real published GS-LRM training sample passes the checks, gives items with its intrinsics and trains a step."
    from facelift_nb.testing import reference_path
    ref = reference_path("facelift_data_sample", "gslrm", "sample_000")
    assert sample_dirs(ref) == [ref] and check_sample(ref) == []
    it = GSLRMDataset(ref, num_input=6, num_target=8, image_size=32)[0]
    assert it["images"].shape == (8, 3, 32, 32) and abs(it["K"][0, 0, 0].item() - 548.9937744140625 / 16) < 1e-3
    res = train_gslrm(GSLRMTrainConfig(data=str(ref), output_dir=str(tmp_path), model_config=GSLRM.tiny_config(),
                                       image_size=16, num_target=6, max_steps=1, warmup_steps=1))
    assert np.isfinite(res.history[0]["loss"])
