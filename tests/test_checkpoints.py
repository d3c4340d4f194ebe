"""Checkpoint management: recognising and checking every kind, manifests, atomic folders under interruption,
rotation into trash and restore, pins, the disk forecast and the Accelerate hooks' exact on-disk layout."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from facelift_nb.checkpoints import (
    check_disk_space,
    checkpoint_paths,
    forecast_disk_usage,
    format_checkpoint_table,
    inspect_checkpoint,
    is_pinned,
    latest_valid_checkpoint,
    list_checkpoints,
    model_save_hooks,
    move_to_trash,
    pin_checkpoint,
    restore_checkpoint,
    rotate_checkpoints,
    safetensors_problems,
    trash_temp_leftovers,
    unpin_checkpoint,
    verify_manifest,
    write_manifest,
)
from facelift_nb.io import atomic_folder
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.models.mvdiffusion import MVDiffusionPipeline, tiny_mv_unet_config


@pytest.fixture(scope="module")
def gslrm():
    torch.manual_seed(0)
    return GSLRM(**GSLRM.tiny_config())


def _published(path, model, step, full=True):
    obj = {"model": model.state_dict(), "param_update_step": step}
    if full: obj |= {"optimizer": torch.optim.AdamW(model.parameters()).state_dict(), "lr_scheduler": {}}
    torch.save(obj, path)
    return path


def test_kinds_and_completeness(tmp_path, gslrm):
    pipe = MVDiffusionPipeline.tiny().save_pretrained(tmp_path / "pipeckpts")
    i = inspect_checkpoint(pipe)
    assert i.kind == "mv-pipeline" and i.ok and i.layout[0] == "front"
    gslrm.save_pretrained(tmp_path / "gslrm_folder")
    assert inspect_checkpoint(tmp_path / "gslrm_folder").kind == "gslrm-pretrained"
    p = _published(tmp_path / "ckpt_0000000000000010.pt", gslrm, 10)
    i = inspect_checkpoint(p)
    assert (i.kind, i.step, i.ok, i.resumable) == ("gslrm-published", 10, True, True)
    w = _published(tmp_path / "weights_only.pt", gslrm, 3, full=False)
    assert not inspect_checkpoint(w).resumable and inspect_checkpoint(w).ok
    from safetensors.torch import save_file
    save_file(gslrm.state_dict(), tmp_path / "g.safetensors")
    assert inspect_checkpoint(tmp_path / "g.safetensors").kind == "gslrm-weights"
    UNet2DConditionModel(**tiny_mv_unet_config()).save_pretrained(tmp_path / "lone_unet")
    assert inspect_checkpoint(tmp_path / "lone_unet").kind == "mv-unet"
    with pytest.raises(FileNotFoundError):
        inspect_checkpoint(tmp_path / "nothing")


def test_broken_checkpoints_are_reported(tmp_path, gslrm):
    # an Accelerate checkpoint whose unet/ is missing, one whose weights are truncated, a truncated pickle,
    # a pipeline without vae
    a = tmp_path / "checkpoint-5"
    a.mkdir()
    (a / "optimizer.bin").write_bytes(b"x")
    UNet2DConditionModel(**tiny_mv_unet_config()).save_pretrained(tmp_path / "checkpoint-6" / "unet")
    (tmp_path / "checkpoint-6" / "optimizer.bin").write_bytes(b"x")
    w = tmp_path / "checkpoint-6" / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    p = _published(tmp_path / "ckpt_0000000000000007.pt", gslrm, 7)
    p.write_bytes(p.read_bytes()[:1000])
    infos = {i.path.name: i for i in list_checkpoints(tmp_path)}
    assert not infos["checkpoint-5"].ok and "not a checkpoint" in infos["checkpoint-5"].problems[0]
    assert not infos["checkpoint-6"].ok and "truncated" in infos["checkpoint-6"].problems[0]
    assert not infos["ckpt_0000000000000007.pt"].ok and infos["ckpt_0000000000000007.pt"].kind == "gslrm-published"
    assert safetensors_problems(w) and "truncated" in safetensors_problems(w)[0]
    table = format_checkpoint_table(list(infos.values()))
    assert table.count("BROKEN") == 3
    pipe = MVDiffusionPipeline.tiny().save_pretrained(tmp_path / "p")
    move_to_trash(pipe / "vae")
    assert "missing vae/" in inspect_checkpoint(pipe).problems


def test_empty_torch_file_is_a_one_line_problem(tmp_path, capsys, caplog):
    # an empty file (a crash before the first byte): the loader's EOFError has no message, which once raised IndexError
    from facelift_nb.cli import main
    e = tmp_path / "ckpt_0000000000000100.pt"
    e.write_bytes(b"")
    info = inspect_checkpoint(e)
    assert info.problems == ["ckpt_0000000000000100.pt: does not load weights-only (EOFError: the file is empty)"]
    assert info.kind == "gslrm-published" and info.step == 100
    assert latest_valid_checkpoint(tmp_path) is None and "skipping" in caplog.text
    assert main(["checkpoints", str(tmp_path)]) == 1  # a check verb: the table marks it BROKEN, exit 1
    out = capsys.readouterr()
    assert "BROKEN" in out.out and "the file is empty" in out.out and "Traceback" not in out.err


def test_latest_valid_skips_broken_newest(tmp_path, gslrm, caplog):
    for s in (1, 2, 3):
        _published(tmp_path / f"ckpt_{s:016d}.pt", gslrm, s)
    newest = tmp_path / "ckpt_0000000000000003.pt"
    newest.write_bytes(newest.read_bytes()[:-50])
    assert latest_valid_checkpoint(tmp_path).name == "ckpt_0000000000000002.pt"
    assert "skipping" in caplog.text
    _published(tmp_path / "ckpt_0000000000000004.pt", gslrm, 4, full=False)  # weights only: not for resume
    assert latest_valid_checkpoint(tmp_path).name == "ckpt_0000000000000002.pt"
    assert latest_valid_checkpoint(tmp_path, resumable=False).name == "ckpt_0000000000000004.pt"


def test_manifest_hashes(tmp_path):
    d = tmp_path / "ck"
    (d / "unet").mkdir(parents=True)
    (d / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"abc" * 100)
    (d / "optimizer.bin").write_bytes(b"opt")
    write_manifest(d, step=7, config={"lr": 1e-4}, layout=["front", "back"])
    man = json.loads((d / "manifest.json").read_text())
    import hashlib
    assert man["files"]["optimizer.bin"]["sha256"] == hashlib.sha256(b"opt").hexdigest() and man["step"] == 7 \
        and man["layout"] == ["front", "back"]
    assert verify_manifest(d) == []
    (d / "optimizer.bin").write_bytes(b"opX")
    assert verify_manifest(d) == ["optimizer.bin: sha256 differs from the manifest"]
    (d / "optimizer.bin").unlink()
    assert verify_manifest(d) == ["optimizer.bin: missing"]
    assert inspect_checkpoint(d, verify=True).problems  # verify=True reports it


def test_atomic_folder_survives_an_interrupted_write(tmp_path):
    final, trash = tmp_path / "checkpoint-1", tmp_path / "trash"
    with atomic_folder(final, overwrite=True, backup_dir=trash) as t:
        (t / "weights.bin").write_bytes(b"good")
    code = f"""
        import os
        from facelift_nb.io import atomic_folder
        with atomic_folder({str(final)!r}, overwrite=True) as t:
            (t / "weights.bin").write_bytes(b"half")
            os._exit(9)  # killed mid-write: no cleanup runs
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)])
    assert r.returncode == 9
    assert (final / "weights.bin").read_bytes() == b"good"  # the complete folder is untouched
    stale = list(tmp_path.glob(".checkpoint-1.tmp-*"))
    assert len(stale) == 1 and checkpoint_paths(tmp_path) == [final]  # leftovers are not checkpoints
    with atomic_folder(final, overwrite=True, backup_dir=trash) as t:
        (t / "weights.bin").write_bytes(b"newer")
    trash_temp_leftovers(final)
    assert (final / "weights.bin").read_bytes() == b"newer"
    assert not list(tmp_path.glob(".checkpoint-1.tmp-*"))
    trashed = sorted(p.name for p in (tmp_path / "trash").iterdir())
    old = [n for n in trashed if n.startswith("checkpoint-1.bak-")]  # the replaced folder, under a unique backup name
    assert any(n.startswith(".checkpoint-1.tmp-") for n in trashed) and len(old) == 1  # nothing deleted
    (tmp_path / "restored").mkdir()
    back = restore_checkpoint(trash / old[0], tmp_path / "restored")
    assert back == tmp_path / "restored" / "checkpoint-1" and (back / "weights.bin").read_bytes() == b"good"


def test_rotation_trash_restore_and_pins(tmp_path, gslrm):
    for s in (1, 2, 3, 4, 5):
        _published(tmp_path / f"ckpt_{s:016d}.pt", gslrm, s)
    pin_checkpoint(tmp_path / "ckpt_0000000000000001.pt")
    assert is_pinned(tmp_path / "ckpt_0000000000000001.pt")
    moved = rotate_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in moved) == ["ckpt_0000000000000002.pt", "ckpt_0000000000000003.pt"]
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["ckpt_0000000000000001.pt", "ckpt_0000000000000004.pt",
                                                             "ckpt_0000000000000005.pt"]
    back = restore_checkpoint(tmp_path / "trash" / "ckpt_0000000000000003.pt")
    assert back == tmp_path / "ckpt_0000000000000003.pt" and inspect_checkpoint(back).ok
    with pytest.raises(FileExistsError):
        _published(tmp_path / "trash" / "x.pt", gslrm, 9)
        restore_checkpoint(tmp_path / "trash" / "x.pt", tmp_path / "trash")
    unpin_checkpoint(tmp_path / "ckpt_0000000000000001.pt")
    assert not is_pinned(tmp_path / "ckpt_0000000000000001.pt")
    with pytest.raises(ValueError, match="keep_last"):
        rotate_checkpoints(tmp_path, 0)


def test_disk_forecast(tmp_path):
    f = forecast_disk_usage(tmp_path, checkpoint_bytes=1000, max_steps=10, checkpoint_every=3)
    assert f["checkpoints"] == 4 and f["needed_bytes"] == 4000 and f["fits"]  # steps 3, 6, 9 and the last step 10
    assert forecast_disk_usage(tmp_path, 1000, 10, 5, start_step=5)["checkpoints"] == 1
    with pytest.raises(OSError, match="trash"):
        check_disk_space(tmp_path / "not" / "yet", checkpoint_bytes=10 ** 18, max_steps=10, checkpoint_every=1)


def test_hooks_write_exactly_where_accelerate_says(tmp_path, monkeypatch):
    from accelerate import Accelerator
    monkeypatch.chdir(tmp_path)
    acc = Accelerator()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_mv_unet_config())
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    extra = []
    save_hook, load_hook = model_save_hooks(acc, "unet", extra_save=lambda out: extra.append(out),
                                            extra_load=lambda inp: extra.append(inp))
    acc.register_save_state_pre_hook(save_hook)
    acc.register_load_state_pre_hook(load_hook)
    unet, opt = acc.prepare(unet, opt)
    out = Path("runs/exp/checkpoints/checkpoint-3")  # relative, as users pass it
    acc.save_state(str(out))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert "runs/exp/checkpoints/checkpoint-3/unet/diffusion_pytorch_model.safetensors" in files
    assert "runs/exp/checkpoints/checkpoint-3/optimizer.bin" in files
    assert not [f for f in files if f.count("runs/exp") > 1 or f.endswith("model.safetensors") and "/unet/" not in f]
    assert extra == [out]
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with torch.no_grad():
        for p in unet.parameters(): p.add_(1.)
    acc.load_state(str(out))
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_file_checkpoints_have_a_travelling_manifest(tmp_path, gslrm):
    for s in (1, 2, 3):
        write_manifest(_published(tmp_path / f"ckpt_{s:016d}.pt", gslrm, s), step=s)
    p = tmp_path / "ckpt_0000000000000001.pt"
    assert verify_manifest(p) == [] \
        and json.loads((tmp_path / "ckpt_0000000000000001.pt.manifest.json").read_text())["step"] == 1
    assert inspect_checkpoint(p, verify=True).ok
    rotate_checkpoints(tmp_path, keep_last=1)
    assert (tmp_path / "trash" / "ckpt_0000000000000001.pt.manifest.json").is_file()
    back = restore_checkpoint(tmp_path / "trash" / "ckpt_0000000000000001.pt")
    assert verify_manifest(back) == []
    back.write_bytes(back.read_bytes()[:-10] + bytes(10))
    assert "sha256 differs" in verify_manifest(back)[0] or "bytes" in verify_manifest(back)[0]
    assert checkpoint_paths(tmp_path) == [back, tmp_path / "ckpt_0000000000000003.pt"]  # manifests are not checkpoints
