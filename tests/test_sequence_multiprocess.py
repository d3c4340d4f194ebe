"""Sequences on several processes: the frames of a rig recording and of a single video split across two CPU
processes (gloo) under `accelerate launch`. Each process writes its own frames, the main process merges the index,
and the rig's files are byte for byte those of a one-process run with the same threads per process (the video's,
through the multi-view stage, agree within float noise)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from facelift_nb.builtin import WEIGHTS_DIR
from facelift_nb.motion import make_front_video, make_rig_sequence
from facelift_nb.pipeline import FaceLiftPipeline, load_gslrm
from facelift_nb.sequence import reconstruct_rig_sequence
from facelift_nb.splats import load_ply

LAUNCHER = """
import json, sys
from pathlib import Path
from facelift_nb.builtin import WEIGHTS_DIR
from facelift_nb.frames import process_state
from facelift_nb.pipeline import FaceLiftPipeline, load_gslrm
from facelift_nb.sequence import reconstruct_rig_sequence
spec = json.loads(Path(sys.argv[1]).read_text())
g, w = load_gslrm(WEIGHTS_DIR / "gslrm")
rig = reconstruct_rig_sequence(g, spec["cameras"], spec["rig_out"], batch=2, weights=w, render_size=32,
                               progress=False)
vid = FaceLiftPipeline.default().sequence(spec["video"], spec["video_out"], num_inference_steps=3, render_size=32,
                                          progress=False)
state = process_state()
Path(spec["report"], f"rank{state.process_index}.json").write_text(json.dumps(dict(
    world=state.num_processes, rig=[rig.computed, rig.index is not None], video=[vid.computed, vid.index is not None])))
"""


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "videos" not in p.parts}


def test_two_processes_write_the_files_of_one(tmp_path):
    rec = make_rig_sequence(tmp_path / "rec", "head", n_frames=7, size=64)
    fv = make_front_video(tmp_path / "front.mp4", "head", n_frames=5, size=64)
    g, w = load_gslrm(WEIGHTS_DIR / "gslrm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process runs: CPU matmuls may round differently on other thread counts
    one_rig = reconstruct_rig_sequence(g, rec.folder / "opencv_cameras.json", tmp_path / "rig1", batch=2, weights=w,
                                       render_size=32, progress=False)
    one_vid = FaceLiftPipeline.default().sequence(fv.path, tmp_path / "vid1", num_inference_steps=3, render_size=32,
                                                  progress=False)
    torch.set_num_threads(threads)
    (tmp_path / "report").mkdir()
    spec = dict(cameras=str(rec.folder / "opencv_cameras.json"), rig_out=str(tmp_path / "rig2"), video=str(fv.path),
                video_out=str(tmp_path / "vid2"), report=str(tmp_path / "report"))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "launch.py").write_text(LAUNCHER)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", str(tmp_path / "launch.py"), str(tmp_path / "spec.json")]
    r = subprocess.run(cmd, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [json.loads((tmp_path / "report" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [x["world"] for x in reports] == [2, 2]
    assert [x["rig"][1] for x in reports] == [True, False]  # only the main process merges the index
    assert reports[0]["rig"][0] == reports[1]["rig"][0] == list(range(7))  # the run's frames, on every process
    assert _files(tmp_path / "rig2") == _files(one_rig.store.folder)
    # the multi-view stage on the CPU differs by ~1e-6 from run to run (even twice in one process), so the video's
    # frames are compared by value: the same frames, records and Gaussians, within float noise
    one, two = _files(one_vid.store.folder), _files(tmp_path / "vid2")
    assert sorted(one) == sorted(two)
    for k in range(5):
        a, b = one_vid.gaussians(k), load_ply(tmp_path / "vid2" / "frames" / f"frame_{k:05d}.ply")
        assert len(a) == len(b)
        torch.testing.assert_close(a.means, b.means, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.sh, b.sh, atol=1e-4, rtol=0)
        rec = [json.loads(d[f"frames/frame_{k:05d}.json"]) for d in (one, two)]
        assert [{x: v for x, v in r.items() if x != "sha256"} for r in rec][0] == \
            [{x: v for x, v in r.items() if x != "sha256"} for r in rec][1]
