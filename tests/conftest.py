import os

import pytest
import torch

from facelift_nb.testing import reference_path

# keep CPU tests deterministic and light on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    "Skip `gpu` tests without CUDA and `weights` tests without published checkpoints, with a reason."
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "weights" in item.keywords and not os.environ.get("FACELIFT_NB_WEIGHTS"):
            item.add_marker(pytest.mark.skip(reason="needs the published checkpoints (set FACELIFT_NB_WEIGHTS)"))


@pytest.fixture(scope="session")
def ref_json():
    return reference_path("facelift_inference_cameras.json")
