"""The one-call pipeline: the built-in model, loading tiny folders exactly as the published ones, inputs and framing,
the output folder and its manifest, bring-your-own views, and the command line (run, reconstruct, render,
checkpoints)."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from facelift_nb.cameras import published_cameras_path
from facelift_nb.checkpoints import sha256_file
from facelift_nb.layouts import get_layout
from facelift_nb.models.gslrm import GSLRM
from facelift_nb.models.mvdiffusion import MVDiffusionPipeline
from facelift_nb.pipeline import FaceLiftPipeline, frame_subject, load_input

# `front_png` (conftest): a procedural head seen by the published front camera, RGBA 512²


@pytest.fixture(scope="module")
def default_pipe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FaceLiftPipeline.tiny()


@pytest.fixture(scope="module")
def published_like(tmp_path_factory):
    "A tiny MV pipeline folder with the published naming + a tiny GS-LRM in the published checkpoint format."
    root = tmp_path_factory.mktemp("weights")
    mv = MVDiffusionPipeline.tiny().save_pretrained(root / "pipeckpts")
    (root / "prompt").mkdir()
    import shutil
    for f in ("clr_embeds.pt", "clr_embeds.json"): shutil.move(str(mv / "prompt_embeds" / f), str(root / "prompt" / f))
    (mv / "prompt_embeds").rmdir()  # published folders carry no embeddings: they come separately
    torch.manual_seed(1)
    g = GSLRM(**GSLRM.tiny_config())
    torch.save({"model": g.state_dict(), "param_update_step": 21125}, root / "ckpt_0000000000021125.pt")
    return root


def test_tiny_warns_loudly_and_runs(front_png, default_pipe):
    with pytest.warns(UserWarning, match="RANDOM-INITIALISED"):
        FaceLiftPipeline.tiny()
    out = default_pipe(front_png, num_inference_steps=2, turntable_frames=3, progress=False, render_size=32)
    assert out.layout.names == get_layout("facelift6").names and out.turntable.rgb.shape == (3, 32, 32, 3)
    assert out.manifest["settings"]["render_size"] == 32
    with pytest.raises(ValueError, match="render_size"):
        default_pipe(front_png, num_inference_steps=1, turntable_frames=0, progress=False, render_size=2)


def test_default_loads_the_shipped_weights(monkeypatch, tmp_path):
    import facelift_nb.builtin as dm
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the built-in model is trained: no random-weights warning
        pipe = FaceLiftPipeline.default()
    card = dm.default_card()
    assert pipe.weights["gslrm"]["files"] \
        and pipe.mvdiffusion.resolution == dm.DEFAULT_SIZE == pipe.gslrm.config.image_size
    for rel, sha in card["files"].items():
        assert sha256_file(dm.WEIGHTS_DIR / rel) == sha, rel  # the shipped files are the ones the card describes
    assert next(pipe.gslrm.parameters()).dtype == torch.float32  # fp16 on disk, float32 to run on a CPU
    # the built-in model keeps the synthetic renders' framing: the shipped mouse reaches MVDiffusion at its own scale
    assert pipe.fill is None and card["input_framing"]["fill"] is None
    from facelift_nb.cli import example_image
    out = pipe(example_image("mouse"), num_inference_steps=2, turntable_frames=2, progress=False)
    rgba = torch.from_numpy(np.array(Image.open(example_image("mouse")))).float() / 255
    ref = torch.nn.functional.avg_pool2d((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]).permute(2, 0, 1)[None],
                                         256 // dm.DEFAULT_SIZE)[0]
    assert (out.input - ref).abs().max() < 1e-4, "fill=None must only composite and resize (area average)"
    assert out.manifest["settings"]["fill"] is None and out.manifest["framing"]["sx"] == dm.DEFAULT_SIZE / 256
    reframed = pipe(example_image("mouse"), num_inference_steps=2, turntable_frames=0, progress=False, fill=0.85)
    assert reframed.manifest["settings"]["fill"] == 0.85 and (reframed.input - out.input).abs().max() > 0.2
    assert set(out.manifest["timings_s"]) >= {"input", "mvdiffusion", "gslrm", "render", "turntable", "total"}
    assert out.manifest["settings"]["seed"] == 4 and len(out.gaussians) > 0
    with pytest.raises(ValueError, match='`fill` must be "model"'):
        pipe(example_image("mouse"), fill="auto")
    monkeypatch.setattr(dm, "WEIGHTS_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="default weights are missing"):
        FaceLiftPipeline.default()  # never a random substitute


def test_published_layout_folders_load_and_manifest_hashes(front_png, published_like, tmp_path):
    pipe = FaceLiftPipeline.from_pretrained(mvdiffusion=published_like / "pipeckpts",
                                            gslrm=published_like / "ckpt_0000000000021125.pt",
                                            prompt_embeds=published_like / "prompt" / "clr_embeds.pt",
                                            gslrm_config=GSLRM.tiny_config())
    assert pipe.fill == "face"  # published-layout weights default to the published face-box framing
    # the procedural head has no face a detector finds: frame it by its mask (face framing is tested in test_framing.py)
    out = pipe(front_png, num_inference_steps=2, turntable_frames=2, progress=False, fill=0.85)
    folder = out.save(tmp_path / "res")
    man = json.loads((folder / "manifest.json").read_text())
    rec = man["weights"]["gslrm"]["files"]["ckpt_0000000000021125.pt"]
    assert rec["sha256"] == sha256_file(published_like / "ckpt_0000000000021125.pt")
    unet = man["weights"]["mvdiffusion"]["files"]["unet/diffusion_pytorch_model.safetensors"]
    assert unet["sha256"] == sha256_file(published_like / "pipeckpts" / "unet" / "diffusion_pytorch_model.safetensors")
    assert man["weights"]["prompt_embeds"]["files"]["clr_embeds.pt"]["sha256"] \
        == sha256_file(published_like / "prompt" / "clr_embeds.pt")
    assert man["layout"]["names"][1] == "front_right" \
        and man["files"]["turntable"] in ("turntable.mp4", "turntable.gif")
    # without the embeddings (and no text encoder) nothing is substituted
    import shutil
    shutil.copytree(published_like / "pipeckpts", tmp_path / "noenc")
    shutil.rmtree(tmp_path / "noenc" / "text_encoder")
    with pytest.raises(ValueError, match="no prompt embeddings"):
        FaceLiftPipeline.from_pretrained(mvdiffusion=tmp_path / "noenc",
                                         gslrm=published_like / "ckpt_0000000000021125.pt",
                                         gslrm_config=GSLRM.tiny_config())


def test_offline_hub_ids_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="Offline, download"):
        FaceLiftPipeline.from_pretrained(mvdiffusion="nobody/facelift-nb-missing", gslrm="nobody/facelift-nb-missing")


def test_save_refuses_then_backs_up(front_png, default_pipe, tmp_path):
    out = default_pipe(front_png, num_inference_steps=1, turntable_frames=0, progress=False)
    out.save(tmp_path / "r")
    assert not (tmp_path / "r" / "turntable.mp4").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        out.save(tmp_path / "r")
    out.save(tmp_path / "r", overwrite=True)
    assert len(list(tmp_path.glob("r.bak-*"))) == 1 and not list(tmp_path.glob(".r.*"))


def test_input_errors(front_png, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_input(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        load_input(tmp_path / "none.png")
    Image.new("CMYK", (80, 80)).save(tmp_path / "cmyk.jpg")
    with pytest.raises(ValueError, match="unsupported image mode 'CMYK'"):
        load_input(tmp_path / "cmyk.jpg")
    with pytest.raises(ValueError, match="at least 64 pixels"):
        load_input(np.zeros((40, 90, 3), np.uint8))
    rgba = Image.open(front_png)
    with pytest.raises(ValueError, match="pass one of them"):
        load_input(rgba, mask=np.ones((512, 512), np.uint8) * 255)
    with pytest.raises(ValueError, match="almost\\) empty"):
        load_input(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="must already be square"):
        frame_subject(torch.rand(3, 64, 96), None, 32)
    with pytest.raises(ValueError, match="fill=None .* must already be square.*fill=0.85"):
        frame_subject(torch.rand(3, 64, 96), torch.ones(64, 96), 32, fill=None)
    for bad in (0, 1.5, "0.8", True):
        with pytest.raises(ValueError, match="`fill` must be a fraction in \\(0, 1\\]"):
            frame_subject(torch.rand(3, 64, 64), torch.ones(64, 64), 32, fill=bad)
    with pytest.raises(TypeError, match="path, PIL image"):
        load_input(42)
    try:
        import rembg  # noqa: F401  (installed: the ImportError path cannot be tested)
    except ImportError:
        with pytest.raises(ImportError, match="rembg"):
            load_input(np.zeros((64, 64, 3), np.uint8), remove_background=True)


def test_rgb_plus_mask_equals_rgba_and_framing_moves_intrinsics(front_png):
    rgba = np.asarray(Image.open(front_png))
    a_rgb, a_mask = load_input(rgba[..., :3], mask=rgba[..., 3])
    b_rgb, b_alpha = load_input(rgba)
    torch.testing.assert_close(a_rgb, b_rgb)
    torch.testing.assert_close(a_mask, b_alpha)
    framed, fr = frame_subject(b_rgb, b_alpha, 128)
    cam = get_layout("facelift6").cameras(hw=(512, 512))[:1]
    moved = fr.cameras(cam)
    assert moved.hw == (128, 128)
    # the framing is a crop of side 128 / scale at the square's corner, then a resize to 128: the same intrinsics
    side = 128 / fr.sx
    x0, y0 = -fr.tx / fr.sx, -fr.ty / fr.sy
    want = cam.K.clone()
    want[..., 0, 2] -= x0
    want[..., 1, 2] -= y0
    want[..., :2, :] *= 128 / side
    torch.testing.assert_close(moved.K, want)
    X = torch.tensor([0.1, -0.2, 0.15])  # a point projected into the input lands where the framing maps it
    def proj(c):
        uv = c.K[0] @ (c.w2c[0, :3, :3] @ X + c.w2c[0, :3, 3])
        return uv[:2] / uv[2]
    torch.testing.assert_close(proj(moved), fr.points(proj(cam)), atol=1e-4, rtol=0)


def test_bring_your_own_views(default_pipe):
    views = torch.rand(6, 3, 64, 64)
    cams = get_layout("facelift6").cameras(hw=(64, 64))
    g = default_pipe.reconstruct(views, cams, filters=None)
    assert len(g) == 2 + 6 * 32 * 32
    with pytest.raises(ValueError, match="6 views but 4 cameras"):
        default_pipe.reconstruct(views, cams[:4])
    with pytest.raises(TypeError, match="Cameras"):
        default_pipe.reconstruct(views, "cams")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "facelift_nb", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def test_cli_run_reconstruct_render_checkpoints(gslrm_sample, front_png, tmp_path):
    r = _cli("run", front_png, "-o", tmp_path / "one", "--default", "--steps", "2", "--turntable", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted([
        "input.png", "multiview.png", "gaussians.ply", "renders.png", "turntable.mp4", "cameras.json", "manifest.json"])
    r = _cli("run", front_png, "-o", tmp_path / "one", "--default")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("facelift-nb: error: output exists")
    r = _cli("run", front_png, "-o", tmp_path / "two", "--steps", "1")
    assert r.returncode == 2 and "--weights" in r.stderr
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in ("a", "b"): Image.open(front_png).resize((128, 128)).save(imgs / f"{n}.png")
    r = _cli("run", imgs, "-o", tmp_path / "many", "--default", "--steps", "1", "--turntable", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a", "b"]
    # reconstruct from a GS-LRM sample's own views and cameras (synthetic, at the published 32-camera rig)
    sample = gslrm_sample
    r = _cli("reconstruct", sample, "--cameras", sample / "opencv_cameras.json", "-o", tmp_path / "rec", "--default",
             "--turntable", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"gaussians.ply", "renders.png", "cameras.json", "manifest.json", "turntable.mp4"} \
        <= {p.name for p in (tmp_path / "rec").iterdir()}
    r = _cli("reconstruct", sample, "--cameras", published_cameras_path(), "-o", tmp_path / "rec2", "--default")
    assert r.returncode == 2 and "facelift-nb: error:" in r.stderr
    r = _cli("render", tmp_path / "one" / "gaussians.ply", "-o", tmp_path / "tt", "--turntable", "8", "--size", "48")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"turntable.mp4", "turntable_strip.png"} <= {p.name for p in (tmp_path / "tt").iterdir()}
    # the checkpoint table and its exit status
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.manual_seed(0)
    g = GSLRM(**GSLRM.tiny_config())
    torch.save({"model": g.state_dict(), "optimizer": {}, "lr_scheduler": {}, "param_update_step": 5},
               ck / "ckpt_0000000000000005.pt")
    r = _cli("checkpoints", ck)
    assert r.returncode == 0 and "gslrm-published" in r.stdout and "resumable" in r.stdout
    (ck / "ckpt_0000000000000009.pt").write_bytes(b"broken")
    r = _cli("checkpoints", ck)
    assert r.returncode == 1 and "BROKEN" in r.stdout
    r = _cli("checkpoints", tmp_path / "nope")
    assert r.returncode == 2


def test_cli_fill_argument():
    import argparse

    from facelift_nb.cli import _fill_arg, main
    assert _fill_arg("model") == "model" and _fill_arg("keep") is None and _fill_arg("0.7") == 0.7
    assert _fill_arg("face") == "face"  # the published face-box framing
    for bad in ("0", "1.2", "auto"):
        with pytest.raises(argparse.ArgumentTypeError, match="'model', 'face', 'keep' or a fraction"):
            _fill_arg(bad)
    with pytest.raises(SystemExit) as e:
        main(["run", "x.png", "-o", "out", "--fill", "2"])
    assert e.value.code == 2


def test_cli_run_with_a_mask(tmp_path, capsys):
    "An RGB photo and its mask image: `run --mask` frames by the mask; a mask with a folder input is refused."
    from facelift_nb.cli import example_image, main
    rgba = np.asarray(Image.open(example_image("mouse")).convert("RGBA"))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "photo.png")
    Image.fromarray(rgba[..., 3]).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), "--default", "--fill", "0.5",
                 "-o", str(out), "--steps", "2", "--turntable", "0"]) == 0
    framing = json.loads((out / "manifest.json").read_text())["framing"]
    assert framing["mask"] == "alpha/mask" and framing["method"] == "mask", framing
    assert main(["run", str(tmp_path), "--mask", str(tmp_path / "mask.png"), "--default",
                 "-o", str(tmp_path / "o2")]) == 2
    assert "--mask goes with one image" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "nope.png"), "--default",
                 "-o", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
