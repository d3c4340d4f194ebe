"""Seeded end-to-end cases whose outputs must stay bit-identical across refactors.

`python tests/golden_cases.py write` stores their outputs in tests/golden/ (do that only on purpose, when a change of
results is intended and reviewed); `tests/test_golden.py` recomputes them and compares, tensor by tensor and byte by
byte. Compiled kernels and BLAS round by the CPU's vector extensions, so bit identity is a promise per machine:
tests/golden/machine.json says which one wrote them, and on another the comparison is skipped with the reason.
"""
import hashlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GOLDEN = Path(__file__).resolve().parent / "golden"
VOLATILE_KEYS = ("timings_s", "versions", "written")  # wall-clock and version fields of manifests


def _clean_json(obj, name: str = ""):
    "A JSON value with its volatile fields removed (temporary paths are replaced in `compute`)."
    if isinstance(obj, dict):
        out = {k: _clean_json(v, k) for k, v in obj.items() if k not in VOLATILE_KEYS and k != "path"}
        if name.endswith(".pt"):  # torch.save names its zip archive after the (temporary) file: compare the tensors
            out.pop("sha256", None)
        return out
    if isinstance(obj, list):
        return [_clean_json(v) for v in obj]
    return obj


def _tree(root: Path, skip=("random_states", "train_log", "optimizer", "scheduler", ".mp4")) -> dict[str, Path]:
    "Files of an output tree worth comparing (optimizer/RNG states are binary pickles; logs hold timings)."
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(s in p.name for s in skip)}


def tensor_digest(t: torch.Tensor) -> str:
    "dtype, shape and the SHA-256 of a tensor's bytes: equal digests mean bit-identical tensors."
    t = t.detach().cpu().contiguous()
    raw = t.view(torch.uint8) if t.numel() else t
    return f"{t.dtype} {tuple(t.shape)} {hashlib.sha256(raw.numpy().tobytes()).hexdigest()}"


def _collect(root: Path, prefix: str, tensors: dict, texts: dict) -> None:
    "Add every comparable file of a tree: tensors from .safetensors/.pt/.bin, cleaned JSON, SHA-256 of other bytes."
    for rel, p in _tree(root).items():
        key = f"{prefix}/{rel}"
        if p.suffix == ".safetensors":
            for k, v in load_file(p).items():
                tensors[f"{key}::{k}"] = v
        elif p.suffix in (".pt", ".bin"):
            obj = torch.load(p, weights_only=True, map_location="cpu")
            flat = obj.get("model", obj) if isinstance(obj, dict) else {"tensor": obj}
            for k, v in flat.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"{key}::{k}"] = v
        elif p.suffix == ".json":
            texts[key] = json.dumps(_clean_json(json.loads(p.read_text())), sort_keys=True)
        else:
            texts[key] = hashlib.sha256(p.read_bytes()).hexdigest()


def case_render() -> tuple[dict, dict]:
    "The fast CPU renderer and the torch reference renderer on a seeded head at six published cameras."
    from facelift_nb.cameras import Cameras, published_cameras_path
    from facelift_nb.render import render
    from facelift_nb.testing import head_scene
    g = head_scene(n=3000, seed=0)
    cams = Cameras.from_facelift_json(published_cameras_path()).resize((40, 40))
    out = {}
    for backend in ("cpu", "torch"):
        r = render(g, cams, backend=backend)
        out |= {f"{backend}.rgb": r.rgb, f"{backend}.alpha": r.alpha, f"{backend}.depth": r.depth}
    return out, {}


def case_pipeline(tmp: Path) -> tuple[dict, dict]:
    "The built-in model on the shipped example head: views, Gaussians, renders, turntable, and the saved output folder."
    from facelift_nb.pipeline import FaceLiftPipeline
    example = Path(__file__).resolve().parents[1] / "facelift_nb" / "assets" / "example_head.png"
    pipe = FaceLiftPipeline.default()
    out = pipe(example, num_inference_steps=3, turntable_frames=2, progress=False, render_size=32)
    g = out.gaussians
    tensors = {"input": out.input, "views": out.views.images, "renders": out.renders.rgb,
               "turntable": out.turntable.rgb, "means": g.means, "quats": g.quats, "scales": g.scales,
               "opacities": g.opacities, "sh": g.sh,
               "w2c": out.cameras.w2c, "K": out.cameras.K}
    texts = {}
    _collect(out.save(tmp / "facelift_out"), "saved", tensors, texts)
    return tensors, texts


def case_train_gslrm(tmp: Path) -> tuple[dict, dict]:
    "Three seeded GS-LRM fine-tuning steps of the tiny model on a synthetic sample: the checkpoint files it writes."
    from facelift_nb.models.gslrm import GSLRM
    from facelift_nb.testing import write_gslrm_sample
    from facelift_nb.train.gslrm import GSLRMTrainConfig, train_gslrm
    sample = write_gslrm_sample(tmp / "gslrm_sample")
    cfg = GSLRMTrainConfig(data=str(sample), output_dir=str(tmp / "gslrm_run"), model_config=GSLRM.tiny_config(),
                           image_size=16, num_input=6, num_target=6, max_steps=3, warmup_steps=1, lr=2e-3,
                           checkpoint_every=2, keep_last=5)
    train_gslrm(cfg)
    tensors, texts = {}, {}
    _collect(tmp / "gslrm_run", "gslrm_run", tensors, texts)
    return {}, texts | {k: tensor_digest(v) for k, v in tensors.items()}


def case_train_mvdiffusion(tmp: Path) -> tuple[dict, dict]:
    "Three seeded MVDiffusion fine-tuning steps of the tiny pipeline (with EMA) on a synthetic sample: its files."
    from facelift_nb.models.mvdiffusion import MVDiffusionPipeline
    from facelift_nb.testing import write_mv_sample
    from facelift_nb.train.mvdiffusion import MVTrainConfig, train_mvdiffusion
    sample = write_mv_sample(tmp / "mv_sample")
    base = MVDiffusionPipeline.tiny().save_pretrained(tmp / "tiny_pipeline")
    cfg = MVTrainConfig(data=str(sample), output_dir=str(tmp / "mv_run"), pretrained=str(base), max_steps=3,
                        checkpoint_every=2, keep_last=2, lr=1e-3, ema=True, ema_decay=0.9)
    train_mvdiffusion(cfg)
    tensors, texts = {}, {}
    _collect(tmp / "mv_run", "mv_run", tensors, texts)
    return {}, texts | {k: tensor_digest(v) for k, v in tensors.items()}


CASES = {"render": lambda tmp: case_render(), "pipeline": case_pipeline, "train_gslrm": case_train_gslrm,
         "train_mvdiffusion": case_train_mvdiffusion}


def compute(name: str) -> tuple[dict, dict]:
    "Run one case in a fresh temporary folder, with the thread count the test suite uses."
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tensors, texts = CASES[name](Path(d))
        texts = {k: v.replace(str(Path(d).resolve()), "<tmp>").replace(d, "<tmp>") for k, v in texts.items()}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, texts


def machine() -> dict:
    "What float results depend on besides the code: the CPU (its model and vector extensions) and torch."
    import platform
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                 platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = sorted(f for f in flags if f.startswith(("avx", "sse", "fma", "amx")))
    return {"cpu": model, "simd": simd, "machine": platform.machine(), "torch": torch.__version__}


def write(names=tuple(CASES)) -> None:
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    for name in names:
        tensors, texts = compute(name)
        if tensors:
            save_file(tensors, GOLDEN / f"{name}.safetensors")
        (GOLDEN / f"{name}.json").write_text(json.dumps(texts, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(tensors)} tensors, {len(texts)} files/texts")


if __name__ == "__main__":
    if sys.argv[1:2] != ["write"]:
        sys.exit("usage: python tests/golden_cases.py write [case ...]")
    write(tuple(sys.argv[2:]) or tuple(CASES))
