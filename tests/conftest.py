import os

import pytest
import torch

from facelift_nb.cameras import Cameras, published_cameras_path
from facelift_nb.layouts import FACELIFT6_JSON_FRAMES
from facelift_nb.synthetic import make_subject, render_views, save_rgba
from facelift_nb.testing import REFERENCE_ENV, has_reference, write_gslrm_sample, write_mv_sample

# keep CPU tests deterministic and light on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Tests not marked `reference` see this folder (it does not exist) as the reference data: they run as on a fresh clone.
NO_REFERENCE = "/nonexistent/facelift_nb_reference"
REFERENCE_SKIP = (f"needs the optional reference data (real upstream sample files), not found; "
                  f"set {REFERENCE_ENV} to the folder that holds it")
_HAS_REFERENCE = has_reference()  # decided once, from the environment pytest was started in


def pytest_collection_modifyitems(config, items):
    "Skip `gpu` tests without CUDA, `weights` without the published checkpoints, `reference` without reference data."
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "weights" in item.keywords and not os.environ.get("FACELIFT_NB_WEIGHTS"):
            item.add_marker(pytest.mark.skip(reason="needs the published checkpoints (set FACELIFT_NB_WEIGHTS)"))
        # the marker, not the keyword: a parametrize id such as mode="reference" is a keyword too
        if item.get_closest_marker("reference") and not _HAS_REFERENCE:
            item.add_marker(pytest.mark.skip(reason=REFERENCE_SKIP))


@pytest.fixture(autouse=True)
def _fresh_clone_unless_reference(request, monkeypatch):
    "Hide the reference data from every test not marked `reference` (and from the subprocesses it starts)."
    if request.node.get_closest_marker("reference") is None:
        monkeypatch.setenv(REFERENCE_ENV, NO_REFERENCE)


@pytest.fixture(scope="session")
def mv_sample(tmp_path_factory):
    "A synthetic MVDiffusion sample: a procedural head at the published inference rig, slot order, 128² (read-only)."
    return write_mv_sample(tmp_path_factory.mktemp("mv") / "sample_000")


@pytest.fixture(scope="session")
def gslrm_sample(tmp_path_factory):
    "A synthetic GS-LRM sample: a procedural head at the 32 cameras of the published training sample, 128² (read-only)."
    return write_gslrm_sample(tmp_path_factory.mktemp("gslrm") / "sample_000")


@pytest.fixture(scope="session")
def front_png(tmp_path_factory):
    "A procedural head seen by the published front camera, RGBA 512² like a published sample's cam_000.png."
    cams = Cameras.from_facelift_json(published_cameras_path())[[FACELIFT6_JSON_FRAMES[0]]]
    return save_rgba(render_views(make_subject(0, "head"), cams)[0], tmp_path_factory.mktemp("front") / "cam_000.png")
