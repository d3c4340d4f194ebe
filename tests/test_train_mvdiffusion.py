"""MVDiffusion fine-tuning: the dataset and its checks, the recipe (shared timesteps, dropout, min-SNR), checkpoints at
the exact path, rotation to trash, exact resume (with EMA), layout changes, widening a base UNet, the CLI."""
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from facelift_nb.checkpoints import STATE_FILE
from facelift_nb.models.mvdiffusion import MVDiffusionPipeline, load_unet_weights, tiny_mv_unet_config
from facelift_nb.train.mvdiffusion import (
    MVDataset,
    MVTrainConfig,
    check_mv_sample,
    latest_mv_checkpoint,
    list_mv_checkpoints,
    min_snr_weights,
    mv_training_loss,
    train_mvdiffusion,
    widen_unet_input,
)

# `mv_sample` (conftest): a synthetic head rendered at the published inference rig, slot order, 128² RGBA


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return MVDiffusionPipeline.tiny().save_pretrained(tmp_path_factory.mktemp("p") / "tiny_pipeline")


@pytest.fixture
def make_cfg(mv_sample):
    "An `MVTrainConfig` factory on the synthetic sample; keywords override."
    def make(out, pretrained, **kw):
        base = dict(data=str(mv_sample), output_dir=str(out), pretrained=str(pretrained), max_steps=4,
                    checkpoint_every=2, keep_last=2, lr=1e-3)
        return MVTrainConfig(**(base | kw))
    return make


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dataset_checks(mv_sample, tmp_path):
    ds = MVDataset(mv_sample, "facelift6", image_size=24, input_view="back")
    it = ds[0]
    assert it["views"].shape == (6, 3, 24, 24) and torch.equal(it["input"], it["views"][3])
    assert ds.layout.names[3] == "back"
    bad = tmp_path / "s"
    shutil.copytree(mv_sample, bad)
    Image.open(bad / "cam_002.png").convert("RGB").save(bad / "cam_002.png")
    (bad / "cam_004.png").unlink()
    problems = check_mv_sample(bad, 6)
    assert "missing cam_004.png" in problems and any("cam_002.png has no alpha" in p for p in problems)
    with pytest.raises(ValueError, match="no usable samples"):
        MVDataset(bad, "facelift6")
    with pytest.raises(ValueError, match="not a slot"):
        MVDataset(mv_sample, "facelift6", input_view="top")


def test_recipe_shares_timesteps_and_drops_conditions(mv_sample, tiny_folder, monkeypatch):
    pipe = MVDiffusionPipeline.from_pretrained(tiny_folder)
    from diffusers import DDPMScheduler
    ns = DDPMScheduler.from_config(pipe.scheduler.config)
    ds = MVDataset(mv_sample, "facelift6", image_size=16)
    batch = {k: torch.stack([ds[0][k], ds[0][k]]) for k in ("views", "input")}
    seen = []
    orig = pipe.unet.forward
    def spy(x, t, encoder_hidden_states=None, class_labels=None, **kw):
        seen.append((x, t, class_labels))
        return orig(x, t, encoder_hidden_states=encoder_hidden_states, class_labels=class_labels, **kw)
    monkeypatch.setattr(pipe.unet, "forward", spy)
    for drop, clip_zero, lat_zero in (((1., 0., 0.), True, False), ((0., 1., 0.), True, True),
                                      ((0., 0., 1.), False, True), ((0., 0., 0.), False, False)):
        seen.clear()
        loss = mv_training_loss(pipe, pipe.unet, batch, pipe.prompt_embeds, ns, torch.Generator().manual_seed(0),
                                drop=drop)
        x, t, cls = seen[0]
        assert torch.isfinite(loss) and x.shape == (12, 8, 8, 8)
        assert torch.all(t.view(2, 6) == t.view(2, 6)[:, :1])  # one timestep per object, shared by its views
        assert bool(torch.all(cls == 0)) == clip_zero and bool(torch.all(x[:, 4:] == 0)) == lat_zero


def test_min_snr_weights():
    ac = torch.linspace(0.999, 0.01, 1000)
    t = torch.tensor([0, 500, 999])
    snr = ac[t] / (1 - ac[t])
    torch.testing.assert_close(min_snr_weights(ac, t, 5.0), torch.minimum(snr, torch.tensor(5.)) / (snr + 1))


def test_checkpoint_paths_rotation_and_final_pipeline(mv_sample, make_cfg, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output_dir: the published hook doubled exactly this kind of path
    res = train_mvdiffusion(make_cfg("runs/exp1", tiny_folder, max_steps=6, keep_last=2))
    root = tmp_path / "runs" / "exp1"
    assert [p.name for p in list_mv_checkpoints(root / "checkpoints")] == ["checkpoint-4", "checkpoint-6"]
    ck = root / "checkpoints" / "checkpoint-6"
    assert sorted(p.name for p in ck.iterdir()) == sorted([
        "unet", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", STATE_FILE, "prompt_embeds.pt",
        "prompt_embeds.json", "manifest.json"])
    from facelift_nb.checkpoints import inspect_checkpoint, verify_manifest
    assert verify_manifest(ck) == [] \
        and "unet/diffusion_pytorch_model.safetensors" in json.loads((ck / "manifest.json").read_text())["files"]
    info = inspect_checkpoint(ck, verify=True)
    assert info.kind == "mv-accelerate" and info.ok and info.resumable and info.step == 6 and len(info.layout) == 6
    assert sorted(p.name for p in (ck / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert (root / "checkpoints" / "trash" / "checkpoint-2" / "unet").is_dir()  # rotated, not deleted
    assert not [p for p in _tree(tmp_path)
                if "runs/exp1/runs" in p or "checkpoints/checkpoints" in p or p.endswith(".tmp")]
    state = json.loads((ck / STATE_FILE).read_text())
    assert state["step"] == 6 and state["layout"]["names"][5] == "front_left" and state["config"]["lr"] == 1e-3
    cfg = json.loads((ck / "unet" / "config.json").read_text())
    assert cfg["num_views"] == 6 and cfg["sparse_mv_attention"] is True
    assert res.pipeline == Path("runs/exp1/pipeline")
    pipe = MVDiffusionPipeline.from_pretrained(res.pipeline)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.layout.names[1] == "front_right"
    for k, v in load_unet_weights(ck / "unet").items():
        assert torch.equal(v, pipe.unet.state_dict()[k])  # the final pipeline holds the last weights
    assert pipe(Image.open(mv_sample / "cam_000.png"), num_inference_steps=2, generator=0).images.shape \
        == (6, 16, 16, 3)


@pytest.mark.parametrize("ema", [False, True])
def test_resume_is_exact(make_cfg, tiny_folder, tmp_path, ema):
    straight = train_mvdiffusion(make_cfg(tmp_path / "a", tiny_folder, max_steps=4, ema=ema, ema_decay=0.9))
    # a run that stopped after its step-2 checkpoint, resumed: it must end bit-identical to the uninterrupted run
    shutil.copytree(tmp_path / "a" / "checkpoints" / "checkpoint-2", tmp_path / "b" / "checkpoints" / "checkpoint-2")
    resumed = train_mvdiffusion(make_cfg(tmp_path / "b", tiny_folder, max_steps=4, resume=True, ema=ema, ema_decay=0.9))
    assert [r["step"] for r in resumed.history] == [3, 4]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history[2:]]
    wa = load_unet_weights(tmp_path / "a" / "pipeline" / "unet")
    wb = load_unet_weights(tmp_path / "b" / "pipeline" / "unet")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if ema:
        assert (tmp_path / "b" / "checkpoints" / "checkpoint-4" / "ema_state.pt").is_file()
        last = load_unet_weights(tmp_path / "b" / "checkpoints" / "checkpoint-4" / "unet")
        assert any(not torch.equal(wb[k], last[k]) for k in wb)  # the final pipeline carries the EMA weights


def test_resume_skips_broken_and_requires_a_checkpoint(make_cfg, tiny_folder, tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="no valid checkpoint"):
        train_mvdiffusion(make_cfg(tmp_path / "none", tiny_folder, resume=True))
    train_mvdiffusion(make_cfg(tmp_path / "r", tiny_folder, max_steps=4))
    ckdir = tmp_path / "r" / "checkpoints"
    (ckdir / "checkpoint-4" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        assert latest_mv_checkpoint(ckdir).name == "checkpoint-2"
    assert "skipping" in caplog.text and "checkpoint-4" in caplog.text


def test_other_layout_and_widened_base_unet(mv_sample, make_cfg, tiny_folder, tmp_path):
    data = tmp_path / "four" / "s0"
    data.mkdir(parents=True)
    for j, src in enumerate([0, 2, 3, 4]):  # front, right, back, left of the sample = the uniform4 slots
        shutil.copy(mv_sample / f"cam_{src:03d}.png", data / f"cam_{j:03d}.png")
    from diffusers import UNet2DConditionModel
    base_dir = tmp_path / "base_unet"
    base = UNet2DConditionModel(**(tiny_mv_unet_config() | dict(in_channels=4)))
    base.save_pretrained(base_dir)
    res = train_mvdiffusion(make_cfg(tmp_path / "run4", tiny_folder, data=str(tmp_path / "four"), layout="uniform4",
                                     unet_from=str(base_dir), max_steps=2))
    pipe = MVDiffusionPipeline.from_pretrained(res.pipeline)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.layout.names == ("front", "right", "back", "left") and pipe.unet.config.in_channels == 8 \
        and pipe.unet.mv_num_views == 4
    assert pipe(Image.open(mv_sample / "cam_000.png"), num_inference_steps=2, generator=0).images.shape \
        == (4, 16, 16, 3)
    with pytest.raises(ValueError, match="no usable samples"):  # 6-view samples are refused for a 4-view layout
        train_mvdiffusion(make_cfg(tmp_path / "bad", tiny_folder, layout="uniform4", max_steps=1))


def test_widened_unet_keeps_base_outputs():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    base = UNet2DConditionModel(**(tiny_mv_unet_config() | dict(in_channels=4))).eval()
    x, t, e, c = torch.randn(2, 4, 8, 8), torch.tensor(3), torch.randn(2, 77, 32), torch.randn(2, 64)
    with torch.no_grad():
        ref = base(x, t, encoder_hidden_states=e, class_labels=c).sample
        wide = widen_unet_input(base, 8)
        out = wide(torch.cat([x, torch.zeros_like(x)], 1), t, encoder_hidden_states=e, class_labels=c).sample
    torch.testing.assert_close(out, ref)
    assert wide.config.in_channels == 8


def test_config_validation_and_cli(mv_sample, make_cfg, tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="sum to at most 1"):
        make_cfg(tmp_path, tiny_folder, drop_clip=0.6, drop_both=0.6)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {mv_sample}\noutput_dir: {tmp_path / 'cli'}\npretrained: {tiny_folder}\nmax_steps: 1\n"
                   "checkpoint_every: 1\n")
    r = subprocess.run([sys.executable, "-m", "facelift_nb", "train-mvdiffusion", str(cfg)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained to step 1" in r.stdout and (tmp_path / "cli" / "checkpoints" / "checkpoint-1" / "unet").is_dir()
    (tmp_path / "bad.yaml").write_text("data: x\noutput_dir: y\npretrained: z\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        MVTrainConfig.from_yaml(tmp_path / "bad.yaml")


def test_gradient_checkpointing_gives_the_same_step(make_cfg, tiny_folder, tmp_path):
    a = train_mvdiffusion(make_cfg(tmp_path / "a", tiny_folder, max_steps=1, checkpoint_every=1))
    b = train_mvdiffusion(make_cfg(tmp_path / "b", tiny_folder, max_steps=1, checkpoint_every=1,
                                   gradient_checkpointing=True))
    assert abs(a.history[0]["loss"] - b.history[0]["loss"]) < 1e-6
    wa, wb = (load_unet_weights(tmp_path / "a" / "pipeline" / "unet"),
              load_unet_weights(tmp_path / "b" / "pipeline" / "unet"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.mark.reference
def test_published_sample_reads_and_trains(tiny_folder, tmp_path):
    "The real published MV training sample passes the checks, gives its six slots and trains a step."
    from facelift_nb.testing import reference_path
    ref = reference_path("facelift_data_sample", "mvdiffusion", "sample_000")
    assert check_mv_sample(ref, 6) == []
    it = MVDataset(ref, "facelift6", image_size=32)[0]
    assert it["views"].shape == (6, 3, 32, 32) and torch.equal(it["input"], it["views"][0])
    res = train_mvdiffusion(MVTrainConfig(data=str(ref), output_dir=str(tmp_path / "run"), pretrained=str(tiny_folder),
                                          max_steps=1, checkpoint_every=1))
    assert len(res.history) == 1 and torch.isfinite(torch.tensor(res.history[0]["loss"]))
