"""Training on several processes: a two-process CPU run (gloo) of `train_gslrm` and `train_mvdiffusion`, as
`accelerate launch` starts it, on tiny models and tiny synthetic data. Checkpoints are written once, by the main
process; both processes end with the same weights; resuming in the two-process run is exact; and the loss curve
and weights match a one-process run with the same global batch."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from facelift_nb.checkpoints import verify_manifest
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.models.mvdiffusion import MVDiffusionPipeline, load_unet_weights
from facelift_nb.testing import write_gslrm_sample, write_mv_sample
from facelift_nb.train.gslrm import GSLRMTrainConfig, train_gslrm
from facelift_nb.train.mvdiffusion import MVTrainConfig, train_mvdiffusion

STEPS, EVERY = 4, 2  # each run trains 4 steps and checkpoints at 2 and 4; the resumed runs continue from checkpoint-2

# What a user's script under `accelerate launch` looks like, plus one line per process with a hash of its final
# weights. One launch does all four two-process runs, so torch/diffusers start up once.
LAUNCHER = '''
import hashlib, json, shutil, sys
from pathlib import Path
from accelerate import PartialState
from facelift_nb.train.gslrm import GSLRMTrainConfig, train_gslrm
from facelift_nb.train.mvdiffusion import MVTrainConfig, train_mvdiffusion

def digest(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

spec = json.loads(Path(sys.argv[1]).read_text())
runs = (("gslrm", GSLRMTrainConfig, train_gslrm, "model"), ("mv", MVTrainConfig, train_mvdiffusion, "unet"))
for name, cls, train, key in runs:
    for run, resume in (("a", False), ("b", True)):
        out = Path(spec[name]["output_dir"] + "_" + run)
        res = train(cls(**spec[name] | {"output_dir": str(out), "resume": resume}))
        state = PartialState()  # after the first Accelerator (it reads ACCELERATE_USE_CPU), so the same processes
        record = {"digest": digest(getattr(res, key)), "history": res.history, "world": state.num_processes}
        Path(spec["hashes"], f"{name}_{run}_rank{state.process_index}.json").write_text(json.dumps(record))
        if run == "a" and state.is_main_process:  # run b resumes from a's step-2 checkpoint (rotated to the trash)
            shutil.copytree(out / "checkpoints" / "trash" / "checkpoint-2",
                            Path(spec[name]["output_dir"] + "_b") / "checkpoints" / "checkpoint-2")
        state.wait_for_everyone()
'''


def _digest(sd: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(sd.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _launch(*args: str) -> list[str]:
    "`accelerate launch` of two CPU processes, every option given (no accelerate config file is read or needed)."
    # accelerate 1.15: `--cpu` alone starts ONE process; CPU processes join (gloo) with --multi_gpu and
    # ACCELERATE_USE_CPU=1
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--num_cpu_threads_per_process", "1", *args]


def _env() -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "Tiny data and configs: two GS-LRM samples, two MV samples, the tiny MV pipeline (all synthetic, in tmp)."
    root = tmp_path_factory.mktemp("mp")
    for s in range(2):
        write_gslrm_sample(root / "gslrm_data" / f"sample_{s:03d}", size=32, seed=s)
        write_mv_sample(root / "mv_data" / f"sample_{s:03d}", size=32, seed=s)
    pipe = MVDiffusionPipeline.tiny().save_pretrained(root / "tiny_pipeline")
    common = dict(max_steps=STEPS, checkpoint_every=EVERY, keep_last=1, batch_size=1)
    gslrm = dict(data=str(root / "gslrm_data"), output_dir=str(root / "gslrm"), model_config=GSLRM.tiny_config(),
                 image_size=16, num_input=4, num_target=6, warmup_steps=1, lr=2e-3, random_crop=[0.7, 1.0], **common)
    mv = dict(data=str(root / "mv_data"), output_dir=str(root / "mv"), pretrained=str(pipe), lr=1e-3, warmup_steps=1,
              drop_clip=0.25, drop_both=0.25, drop_latent=0.25, **common)  # dropout often enough to occur in 8 draws
    return root, gslrm, mv


@pytest.fixture(scope="module")
def launched(setup):
    "The two-process runs, started as a user starts them: `accelerate launch` of a script."
    root, gslrm, mv = setup
    (root / "hashes").mkdir()
    spec = root / "spec.json"
    spec.write_text(json.dumps({"gslrm": gslrm, "mv": mv, "hashes": str(root / "hashes")}))
    script = root / "launch_train.py"
    script.write_text(textwrap.dedent(LAUNCHER))
    r = subprocess.run(_launch(str(script), str(spec)), capture_output=True, text=True, timeout=600, env=_env(),
                       cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    ranks = {}
    for p in (root / "hashes").iterdir():
        name, run, rank = p.stem.split("_")
        ranks[(name, run, int(rank[4:]))] = json.loads(p.read_text())
    return root, ranks


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("name", ["gslrm", "mv"])
def test_checkpoints_written_once_by_the_main_process(launched, name):
    root, ranks = launched
    assert {v["world"] for v in ranks.values()} == {2}  # really two processes, joined
    a = root / f"{name}_a"
    ck = a / "checkpoints"
    # one folder per checkpoint, no leftover temporaries, one set of RNG states (the main process's)
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-4", "trash"]
    assert [p.name for p in (ck / "trash").iterdir()] == ["checkpoint-2"]
    for c in (ck / "checkpoint-4", ck / "trash" / "checkpoint-2"):
        assert verify_manifest(c) == []
        assert [p.name for p in c.glob("random_states_*")] == ["random_states_0.pkl"]
    assert not list(a.rglob(".*tmp-*"))
    log = [json.loads(line) for line in (a / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # one line per step: only the main process logs
    assert log == ranks[(name, "a", 0)]["history"]
    final = "final" if name == "gslrm" else "pipeline"
    assert (a / final).is_dir() and not list(a.glob(f".{final}.tmp-*"))
    if name == "gslrm":
        assert _tree(a / "published") == ["ckpt_0000000000000004.pt", "ckpt_0000000000000004.pt.manifest.json"]


@pytest.mark.parametrize("name", ["gslrm", "mv"])
def test_processes_agree_and_resume_is_exact(launched, name):
    root, ranks = launched
    a0, a1, b0, b1 = (ranks[(name, run, r)] for run in "ab" for r in (0, 1))
    assert a0["digest"] == a1["digest"]  # both processes end with identical weights
    assert a0["history"] == a1["history"]  # and log the same (gathered) loss
    # the weights on disk are the processes' weights
    ck = root / f"{name}_a" / "checkpoints" / "checkpoint-4"
    disk = GSLRM.from_pretrained(ck / "gslrm").state_dict() if name == "gslrm" else load_unet_weights(ck / "unet")
    assert _digest(disk) == a0["digest"]
    # resumed at step 2 in the two-process run: bit-identical to the uninterrupted run (same split, same reductions)
    assert b0["digest"] == b1["digest"] == a0["digest"]
    assert [r["step"] for r in b0["history"]] == [3, 4] and b0["history"] == a0["history"][2:]


# One process with batch 2 vs two processes with batch 1: the same global batch (sample j of step s has the global index
# 2s + j either way; crops, views, latent samples, timesteps, noise and dropout are seeded by that index, not by the
# rank), the same mean gradient (DDP averages the two per-process means of equal-sized halves), the same logged mean
# and one LR-schedule step per step. What differs is float32 rounding: one process sums the gradient over the batch
# inside one backward pass, two processes sum halves and add them in gloo's all-reduce, and kernels see batches of 1
# instead of 2. That is ~1e-7 relative per step. Measured: the losses agree to ~1e-6 relative (bound 1e-4). The
# weights agree to ~2e-5 of the distance they moved (GS-LRM) and ~5e-4 (UNet): the UNet's conv biases just before a
# GroupNorm have a gradient that is zero in exact arithmetic (the norm removes the mean), and AdamW divides that
# rounding noise by its own magnitude, so those biases take ±lr-sized steps of arbitrary sign (differences up to
# ~1e-4 absolute at lr 1e-3). Hence the weight bound is on the whole update, relative: |w1 - w2| / |w(4) - w(2)|
# < 1e-2. A real mismatch (another sample, timestep or dropout draw, an unaveraged gradient, a schedule stepped twice
# per step) moves the loss by 1e-2 or more and the relative weight difference to order 1.
LOSS_RTOL, UPDATE_RTOL = 1e-4, 1e-2


def _weights(name, folder: Path) -> dict:
    return (GSLRM.from_pretrained(folder / "gslrm").state_dict() if name == "gslrm"
            else load_unet_weights(folder / "unet"))


@pytest.mark.parametrize("name", ["gslrm", "mv"])
def test_matches_one_process_with_the_same_global_batch(setup, launched, name, tmp_path):
    root, gslrm, mv = setup
    _, ranks = launched
    cfg = {"gslrm": gslrm, "mv": mv}[name] | {"output_dir": str(tmp_path / "one"), "batch_size": 2}
    res = train_gslrm(GSLRMTrainConfig(**cfg)) if name == "gslrm" else train_mvdiffusion(MVTrainConfig(**cfg))
    one, two = res.history, ranks[(name, "a", 0)]["history"]
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    torch.testing.assert_close(torch.tensor([r["loss"] for r in two]), torch.tensor([r["loss"] for r in one]),
                               rtol=LOSS_RTOL, atol=0)
    assert [r["lr"] for r in one] == [r["lr"] for r in two]
    ck = root / f"{name}_a" / "checkpoints"
    w1, w2, mid = (getattr(res, {"gslrm": "model", "mv": "unet"}[name]).state_dict(),
                   _weights(name, ck / "checkpoint-4"), _weights(name, ck / "trash" / "checkpoint-2"))
    assert w1.keys() == w2.keys() == mid.keys()
    norm = lambda d: sum(v.double().square().sum() for v in d.values()).sqrt().item()
    diff, moved = norm({k: w1[k] - w2[k] for k in w1}), norm({k: w2[k] - mid[k] for k in w2})
    assert moved > 0 and diff / moved < UPDATE_RTOL, (diff, moved)


def test_cli_under_accelerate_launch(setup, tmp_path):
    "The command a user runs: `accelerate launch ... -m facelift_nb train-gslrm run.yaml`, two CPU processes."
    _, gslrm, _ = setup
    out = tmp_path / "cli"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(gslrm | {"output_dir": str(out), "max_steps": 2}))  # JSON is YAML
    r = subprocess.run(_launch("-m", "facelift_nb", "train-gslrm", str(cfg)), capture_output=True, text=True,
                       timeout=600, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert "trained to step 2" in r.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert verify_manifest(out / "checkpoints" / "checkpoint-2") == []
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2


def test_lost_processes_are_an_error(monkeypatch):
    "`accelerate launch --multi_gpu` without CUDA starts processes that do not join: stop instead of racing."
    from facelift_nb.train.common import make_accelerator
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU=1"):
        make_accelerator()
