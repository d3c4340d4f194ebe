"""Reproduce the built-in default model (facelift_nb/weights/default) from scratch on a CPU.

Every step writes into WORK (default ./default_model_work) and refuses to overwrite a finished step:

    python recipes/default_model.py data      # procedural subjects -> WORK/data (MV + GS-LRM layouts, held-out lists)
    python recipes/default_model.py vae       # fit the 32² autoencoder -> WORK/vae
    python recipes/default_model.py mv        # untrained pipeline around it -> WORK/mv_init;
                                              # train_mvdiffusion -> WORK/mv_run
    python recipes/default_model.py mv2       # stage 2: train WORK/mv_run/pipeline (or --start FOLDER) 4000 steps
                                              # longer (resumable) -> WORK/mv_run2
    python recipes/default_model.py variants  # MV models for uniform4, uniform8 and nonuniform6, each fine-tuned from
                                              # the facelift6 one on its own layout's data -> WORK/mv_<label>
    python recipes/default_model.py gslrm     # train_gslrm -> WORK/gslrm_run
    python recipes/default_model.py gslrm2    # stage 2: fine-tune WORK/gslrm_run/final for longer -> WORK/gslrm_run2
    python recipes/default_model.py gslrm3    # stage 3: 4 to 8 random input views from WORK/gslrm_run2/final
                                              # (or --start FOLDER) -> WORK/gslrm_run3
    python recipes/default_model.py gslrm4    # stage 4: the same, 600 steps more at a lower rate -> WORK/gslrm_run4
    python recipes/default_model.py evaluate  # held-out figures -> WORK/evaluation.json
    python recipes/default_model.py export    # fp16 weights + card.json -> facelift_nb/weights/default
                                              # (the old copy kept as .bak)

`all` runs them in order. `mv` and `gslrm` are independent and can run at the same time (one thread each:
`--threads 1`). The exact configurations are the dicts below; the run logs (train_log.jsonl) stay in WORK.
"""
import argparse
import json
import time
from pathlib import Path

import torch

DATA = dict(n_subjects=840, n_val=40, layout="facelift6", mv_size=64, gslrm_size=64, n_gslrm_views=32, seed=0)
VAE = dict(steps=600, batch_size=16, lr=2e-3, kl_weight=1e-6, seed=0)
MV = dict(layout="facelift6", image_size=32, batch_size=4, max_steps=1000, lr=5e-4, warmup_steps=100, weight_decay=1e-2,
          snr_gamma=5.0, ema=True, ema_decay=0.995, checkpoint_every=500, keep_last=2, seed=0)
GSLRM_RUN = dict(num_input=6, num_target=8, input_views=(0, 1, 2, 3, 4, 5), image_size=32, batch_size=1, max_steps=600,
                 lr=4e-4, warmup_steps=50, checkpoint_every=200, keep_last=2, seed=0)
# Stage 2: after 600 steps the held-out novel views beat the nearest input view by only 1.0 dB (24.2 vs 23.2 dB), so the
# stage-1 weights are trained further with a fresh optimizer (fine_tune_from) on both cores.
GSLRM_RUN2 = dict(GSLRM_RUN, max_steps=1200, lr=3e-4, warmup_steps=50, checkpoint_every=300, seed=1)
# MV stage 2: after 1000 steps the generated side and back views still show a face (view identity does not hold), so
# the UNet is trained 4000 steps more, with a fresh schedule and a slower EMA.
MV2 = dict(MV, max_steps=4000, lr=3e-4, warmup_steps=100, ema_decay=0.999, checkpoint_every=500, keep_last=3, seed=1)
# Variants for the layout study: each layout's own data (the same subjects), fine-tuned from the facelift6 model with
# prompts for its slots. They are built here on demand, not shipped.
NONUNIFORM6 = dict(azimuths_deg=[0., 30., 90., 180., 270., 330.], elevations_deg=[0., 0., 0., 20., 0., 0.],
                   label="nonuniform6")
VARIANT_LAYOUTS = ("uniform4", "uniform8", "nonuniform6")
MV_VARIANT = dict(MV, max_steps=400, lr=2e-4, warmup_steps=20, ema_decay=0.99, checkpoint_every=200, keep_last=2,
                  seed=3)
# Stage 3: as the published GS-LRM was pre-trained, each step sees a random number (4 to 8) of random views of the
# 32-view samples and is scored on 12 views (the inputs and at least 4 others), so one model serves every layout.
GSLRM_RUN3 = dict(num_input=(4, 8), num_target=12, input_views=None, image_size=32, batch_size=1, max_steps=1500,
                  lr=2e-4, warmup_steps=50, checkpoint_every=250, keep_last=6, seed=2)
# Stage 4: after stage 3 the facelift6 inputs scored 27.91 dB on the held-out subjects, 0.16 dB below the
# facelift6-only model; its training PSNR was still rising, so it is trained further at a lower rate.
GSLRM_RUN4 = dict(GSLRM_RUN3, max_steps=600, lr=1e-4, warmup_steps=20, checkpoint_every=200, keep_last=3, seed=4)


def step_data(work: Path):
    from facelift_nb.synthetic import make_dataset
    make_dataset(work / "data", **DATA)


def step_vae(work: Path):
    from facelift_nb.default_model import fit_vae
    res = fit_vae(work / "data" / "mv_train.txt", work / "vae", **VAE)
    (work / "vae_fit.json").write_text(json.dumps(res))
    print(f"VAE reconstruction PSNR {res['psnr']:.2f} dB, scaling factor {res['scaling_factor']:.4f}")


def _train_mv(work: Path, out: str, run: dict, pretrained: str):
    "train_mvdiffusion from the pipeline folder WORK/pretrained into WORK/out (resuming when it has checkpoints)."
    from facelift_nb.train.mvdiffusion import MVTrainConfig, train_mvdiffusion
    ck = work / out / "checkpoints"
    cfg = MVTrainConfig(data=str(work / "data" / "mv_train.txt"), output_dir=str(work / out),
                        pretrained=str(work / pretrained), resume=ck.is_dir() and any(ck.glob("checkpoint-*")), **run)
    h = train_mvdiffusion(cfg).history
    if h: print(f"MV ({out}) loss first/last 50 steps:", sum(r["loss"] for r in h[:50]) / len(h[:50]),
                sum(r["loss"] for r in h[-50:]) / len(h[-50:]))


def step_mv(work: Path):
    from facelift_nb.default_model import build_mv_pipeline
    if not (work / "mv_init").exists(): build_mv_pipeline(work / "vae").save_pretrained(work / "mv_init")
    _train_mv(work, "mv_run", MV, "mv_init")


def step_mv2(work: Path): _train_mv(work, "mv_run2", MV2, START["mv2"])


def variant_layout(label: str):
    "A variant's `ViewLayout` (a registered name, or the non-uniform one defined above)."
    from facelift_nb.layouts import ViewLayout, get_layout
    if label != "nonuniform6": return get_layout(label)
    return ViewLayout.from_azimuths(NONUNIFORM6["azimuths_deg"], NONUNIFORM6["elevations_deg"], label="nonuniform6")


def step_variants(work: Path):
    from facelift_nb.models.mvdiffusion import (
        MVDiffusionPipeline,
        encode_view_prompts,
        save_prompt_embeds,
        tiny_text_components,
    )
    from facelift_nb.synthetic import make_dataset
    base = _mv_final(work)
    enc, tok = tiny_text_components(0)  # the text encoder build_mv_pipeline encoded the shipped prompts with
    own = MVDiffusionPipeline.from_pretrained(base)
    again = encode_view_prompts(own.layout, enc, tok)
    if not torch.allclose(again, own.prompt_embeds.float(), atol=1e-2):  # fp16 copies: 1e-2
        raise ValueError(f"tiny_text_components(0) does not reproduce {base}'s prompt embeddings.")
    for label in VARIANT_LAYOUTS:
        lay = variant_layout(label)
        data = work / f"data_{label}"
        if not data.exists():
            make_dataset(data, **dict(DATA, layout=lay, gslrm_size=32, n_gslrm_views=len(lay)))
        emb = work / f"prompts_{label}" / "clr_embeds.pt"
        if not emb.exists(): save_prompt_embeds(emb, encode_view_prompts(lay, enc, tok), lay)
        ck = work / f"mv_{label}" / "checkpoints"
        from facelift_nb.train.mvdiffusion import MVTrainConfig, train_mvdiffusion
        cfg = MVTrainConfig(data=str(data / "mv_train.txt"), output_dir=str(work / f"mv_{label}"), pretrained=str(base),
                            prompt_embeds=str(emb), resume=ck.is_dir() and any(ck.glob("checkpoint-*")),
                            **dict(MV_VARIANT, layout=lay.to_dict()))
        t = time.time()
        train_mvdiffusion(cfg)
        print(f"MV {label}: {cfg.max_steps} steps in {time.time() - t:.0f} s", flush=True)


def _train_gslrm(work: Path, out: str, run: dict, fine_tune_from: str | None = None):
    "train_gslrm into WORK/out (resuming when it has checkpoints, else starting from `fine_tune_from` or scratch)."
    from facelift_nb.default_model import default_gslrm_config
    from facelift_nb.train.gslrm import GSLRMTrainConfig, train_gslrm
    ck = work / out / "checkpoints"
    resume = ck.is_dir() and any(ck.glob("checkpoint-*"))
    start = None if resume or fine_tune_from is None else str(work / fine_tune_from)
    cfg = GSLRMTrainConfig(data=str(work / "data" / "gslrm_train.txt"), output_dir=str(work / out),
                           model_config=default_gslrm_config(), resume=resume, fine_tune_from=start, **run)
    h = train_gslrm(cfg).history
    first, last = sum(r["psnr"] for r in h[:50]) / 50, sum(r["psnr"] for r in h[-50:]) / 50
    print(f"GS-LRM ({out}) training PSNR first/last 50 steps: {first:.2f} / {last:.2f} dB")


def step_gslrm(work: Path): _train_gslrm(work, "gslrm_run", GSLRM_RUN)


def step_gslrm2(work: Path): _train_gslrm(work, "gslrm_run2", GSLRM_RUN2, fine_tune_from="gslrm_run/final")


def step_gslrm3(work: Path): _train_gslrm(work, "gslrm_run3", GSLRM_RUN3, fine_tune_from=START["gslrm3"])


def step_gslrm4(work: Path): _train_gslrm(work, "gslrm_run4", GSLRM_RUN4, fine_tune_from="gslrm_run3/final")


def _final(work: Path, *folders: str) -> Path:
    "The newest stage's folder of `folders` (latest first) that exists in WORK."
    for f in folders:
        if (work / f).is_dir(): return work / f
    raise FileNotFoundError(f"none of {folders} in {work}: run the training steps first.")


def _mv_final(work: Path) -> Path: return _final(work, "mv_run2/pipeline", "mv_run/pipeline")


def _gslrm_final(work: Path) -> Path: return _final(work, "gslrm_run4/final", "gslrm_run3/final", "gslrm_run2/final")


def step_evaluate(work: Path):
    from facelift_nb.default_model import evaluate_gslrm, evaluate_pipeline
    from facelift_nb.evaluate import builtin_held_out_samples, view_identity
    from facelift_nb.pipeline import FaceLiftPipeline
    pipe = FaceLiftPipeline.from_pretrained(mvdiffusion=_mv_final(work), gslrm=_gslrm_final(work))
    gs = evaluate_gslrm(pipe.gslrm, work / "data" / "gslrm_val.txt")
    mv = evaluate_pipeline(pipe, work / "data" / "mv_val.txt", work / "data" / "gslrm_val.txt")
    vi = view_identity(pipe.mvdiffusion, builtin_held_out_samples(DATA["n_val"]), progress=True)
    ident = dict(n_samples=len(vi.samples), min_angle_deg=vi.min_angle_deg, closer_to_own=vi.fractions(),
                 holds_at_80=vi.holds(0.8), gain_over_copy_db=vi.gain_db(), slots=vi.rows())
    res = {"gslrm": gs, "mvdiffusion": mv, "view_identity": ident}
    (work / "evaluation.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def _stage(run: dict, **extra) -> dict:
    "A training stage as the card records it (tuples as lists)."
    return {k: list(v) if isinstance(v, tuple) else v for k, v in run.items()} | extra


def _start_name(run: Path, key: str) -> str:
    "Where a run started (`key` of the config its checkpoints record; resumed parts record none), for the card."
    from facelift_nb.builtin import WEIGHTS_DIR
    states = (json.loads(f.read_text())["config"][key] for f in (run / "checkpoints").rglob("facelift_state.json"))
    start = next((s for s in states if s), None)
    p = Path(start) if start else None
    if p is not None and p.is_relative_to(WEIGHTS_DIR): return f"the shipped built-in weights ({p.name}, fp16)"
    return str(p.relative_to(run.parent)) if p is not None and p.is_relative_to(run.parent) else str(start)


def step_export(work: Path):
    from facelift_nb.builtin import WEIGHTS_DIR, default_card
    from facelift_nb.default_model import export_default_weights
    prev = default_card()  # stages this WORK did not run keep the shipped card's records
    ev = json.loads((work / "evaluation.json").read_text())
    times = json.loads((work / "timings.json").read_text()) if (work / "timings.json").is_file() else {}
    vae_fit = work / "vae_fit.json"
    card = dict(made_by="recipes/default_model.py", made=time.strftime("%Y-%m-%d"), data=DATA, vae=VAE, mv=MV,
                gslrm=_stage(GSLRM_RUN), gslrm_stage2=_stage(GSLRM_RUN2, fine_tune_from="gslrm_run/final"),
                vae_fit={k: v for k, v in json.loads(vae_fit.read_text()).items() if k != "mse"}
                if vae_fit.is_file() else prev["vae_fit"],
                input_framing=prev["input_framing"], evaluation=ev, previous_evaluation=prev["evaluation"],
                licence="trained here on procedural data only; no published weights involved")
    if (work / "mv_run2").is_dir(): card["mv_stage2"] = _stage(MV2, start=_start_name(work / "mv_run2", "pretrained"))
    if (work / "gslrm_run3").is_dir():
        card["gslrm_stage3"] = _stage(GSLRM_RUN3, fine_tune_from=_start_name(work / "gslrm_run3", "fine_tune_from"))
    if (work / "gslrm_run4").is_dir(): card["gslrm_stage4"] = _stage(GSLRM_RUN4, fine_tune_from="gslrm_run3/final")
    card["training_seconds"] = times
    export_default_weights(_mv_final(work), _gslrm_final(work), WEIGHTS_DIR, card)
    print("wrote", WEIGHTS_DIR)


START = {"gslrm3": "gslrm_run2/final", "mv2": "mv_run/pipeline"}  # --start replaces them (relative to WORK or absolute)
STEPS = {"data": step_data, "vae": step_vae, "mv": step_mv, "mv2": step_mv2, "variants": step_variants,
         "gslrm": step_gslrm, "gslrm2": step_gslrm2, "gslrm3": step_gslrm3, "gslrm4": step_gslrm4,
         "evaluate": step_evaluate,
         "export": step_export}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=[*STEPS, "all"])
    ap.add_argument("--work", default="default_model_work")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--start", default=None, help=f"mv2, gslrm3: the folder to start from (default {START})")
    a = ap.parse_args()
    if a.start and a.step not in START: ap.error(f"--start applies to {sorted(START)} only, not {a.step!r}.")
    if a.start: START[a.step] = str(Path(a.start).resolve())
    if a.threads: torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in (STEPS if a.step == "all" else [a.step]):
        t = time.time()
        print(f"== {name}", flush=True)
        STEPS[name](work)
        print(f"== {name} done in {time.time() - t:.0f} s", flush=True)
        tf = work / "timings.json"  # wall-clock seconds of each step's last run (the card keeps them)
        tf.write_text(json.dumps((json.loads(tf.read_text()) if tf.is_file() else {}) | {name: round(time.time() - t)}))
