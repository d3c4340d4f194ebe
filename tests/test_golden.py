"""Outputs stay bit-identical: renders, Gaussians, the saved output folder and training checkpoints on seeded cases,
compared with the files tests/golden_cases.py wrote before the last refactor (regenerate them only on purpose)."""
import json

import pytest
import torch
from golden_cases import CASES, GOLDEN, compute, machine
from safetensors.torch import load_file


def _written_here() -> str | None:
    "Why the goldens cannot be compared bit for bit here (another CPU or torch wrote them), or None."
    path = GOLDEN / "machine.json"
    if not path.exists(): return "tests/golden/machine.json is missing"
    there, here = json.loads(path.read_text()), machine()
    if there == here: return None
    return (f"the golden outputs were written on {there['cpu']} (torch {there['torch']}), this is {here['cpu']} "
            f"(torch {here['torch']}): float rounding follows the CPU; run `python tests/golden_cases.py write` "
            "here before a refactor to guard it on this machine")


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_are_bit_identical(name):
    why = _written_here()
    if why: pytest.skip(why)
    tensors, texts = compute(name)
    want_texts = json.loads((GOLDEN / f"{name}.json").read_text())
    assert sorted(texts) == sorted(want_texts), "a different set of outputs or files"
    changed = [k for k in texts if texts[k] != want_texts[k]]
    assert not changed, f"changed files or tensors: {changed[:10]}"
    stored = GOLDEN / f"{name}.safetensors"
    want = load_file(stored) if stored.exists() else {}
    assert sorted(tensors) == sorted(want)
    for k, v in tensors.items():
        assert v.dtype == want[k].dtype and v.shape == want[k].shape, k
        assert torch.equal(v, want[k]), f"{k}: max |diff| {(v.double() - want[k].double()).abs().max().item():.3g}"


def test_the_comparison_catches_a_one_bit_change():
    from golden_cases import tensor_digest
    t = torch.linspace(0, 1, 7)
    u = t.clone()
    u.view(torch.int32)[3] ^= 1  # flip the lowest mantissa bit of one element
    assert tensor_digest(t) == tensor_digest(t.clone()) and tensor_digest(t) != tensor_digest(u)
