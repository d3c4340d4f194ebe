"""Correctness of the benchmarks' reference implementations (timings are never asserted)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cameras as bench_cameras  # noqa: E402

from facelift_nb.cameras import plucker_inputs  # noqa: E402
from facelift_nb.layouts import get_layout  # noqa: E402


def test_reference_plucker_agrees_with_library():
    cams = get_layout("facelift6").cameras(hw=(16, 24))
    imgs = torch.rand(6, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bench_cameras.reference_plucker(imgs, cams), plucker_inputs(imgs, cams), atol=2e-6, rtol=0)


def test_benchmark_runs(capsys):
    bench_cameras.main(repeats=1, hw=(16, 16))
    assert "ratio reference / library" in capsys.readouterr().out
