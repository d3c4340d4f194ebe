"""Layout presets against the published rig, matching sweeps, coverage metrics and errors."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelift_nb.cameras import Cameras, orbit, published_cameras_path
from facelift_nb.layouts import (
    FACELIFT6_JSON_FRAMES,
    ViewLayout,
    get_layout,
    layout_stats,
    list_layouts,
    match_layout,
    register_layout,
    uniform_layout,
    view_prompts,
)


def test_facelift6_equals_published_json():
    ref = Cameras.from_facelift_json(published_cameras_path())
    mine = get_layout("facelift6").cameras()
    idx = list(FACELIFT6_JSON_FRAMES)
    assert (mine.w2c - ref.w2c[idx]).abs().max() < 1e-5
    assert (mine.K - ref.K[idx]).abs().max() < 1e-5
    assert mine.hw == ref.hw == (512, 512)
    assert mine.names == ("front", "front_right", "right", "back", "left", "front_left")


def test_facelift6_is_not_an_even_ring():
    assert get_layout("facelift6").azimuths_deg == (0., 45., 90., 180., 270., 315.)
    assert get_layout("facelift6").azimuths_deg != get_layout("uniform6").azimuths_deg


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 12])
@pytest.mark.parametrize("start", [0., 22.5, -30.])
def test_uniform_layouts(n, start):
    lay = uniform_layout(n, elevation_deg=15., start_deg=start)
    assert len(lay) == n and len(set(lay.names)) == n
    st_ = layout_stats(lay)
    assert abs(st_.largest_azimuth_gap_deg - 360 / n) < 1e-9
    cams = lay.cameras(radius=3.)
    torch.testing.assert_close(cams.centers[:, 2],
                               torch.full((n,), 3 * torch.sin(torch.deg2rad(torch.tensor(15.))).item()))


def test_coverage_improves_with_more_views():
    means = [layout_stats(f"uniform{n}").mean_coverage_deg for n in (4, 6, 8)]
    assert means[0] > means[1] > means[2]


def test_prompts_match_published_strings():
    views = ["front", "front_right", "right", "back", "left", "front_left"]
    assert view_prompts("facelift6") == tuple(f"a rendering image of 3D models, {v} view, color map." for v in views)
    with pytest.raises(ValueError, match="{view}"):
        view_prompts("facelift6", template="no placeholder")


@given(st.permutations(range(6)))
@settings(max_examples=60, deadline=None)
def test_match_recovers_any_order(perm):
    cams = get_layout("facelift6").cameras()[list(perm)]
    m = match_layout(cams, "facelift6")
    assert [perm[i] for i in m.indices] == list(range(6))
    assert max(m.residuals_deg) < 1e-3
    torch.testing.assert_close(m.apply(cams).w2c, get_layout("facelift6").cameras().w2c)


@given(st.lists(st.floats(-4, 4), min_size=6, max_size=6), st.lists(st.floats(-4, 4), min_size=6, max_size=6),
       st.floats(1., 10.))
@settings(max_examples=60, deadline=None)
def test_match_tolerates_jitter_and_scale(daz, del_, radius):
    lay = get_layout("facelift6")
    cams = orbit([a + d for a, d in zip(lay.azimuths_deg, daz)], del_, radius=radius)
    m = match_layout(cams, lay, max_residual_deg=6.)
    assert m.indices == tuple(range(6))
    assert max(m.residuals_deg) < 6.


def test_match_picks_slots_from_a_larger_rig():
    rig = Cameras.from_facelift_json(published_cameras_path("gslrm_sample"))
    m = match_layout(rig, "uniform4", max_residual_deg=60.)
    assert len(set(m.indices)) == 4


def test_match_in_a_y_up_world():
    lay = get_layout("facelift6")
    cams = orbit(lay.azimuths_deg, up_axis="y", front_axis="z")[[5, 4, 3, 2, 1, 0]]
    m = match_layout(cams, lay, up_axis="y", front_axis="z")
    assert m.indices == (5, 4, 3, 2, 1, 0)
    with pytest.raises(ValueError, match="slots off by more than"):
        match_layout(cams, lay)  # the wrong world convention does not match silently


def test_match_errors():
    lay = ViewLayout.from_azimuths([0, 45, 90, 180])
    with pytest.raises(ValueError, match="mirrored"):
        match_layout(orbit([0., -45, -90, 180]), lay)
    with pytest.raises(ValueError) as e:
        match_layout(orbit([0., 20, 90, 180]), lay)
    assert "mirrored" not in str(e.value) and "front_right (25.0°" in str(e.value)
    with pytest.raises(TypeError, match="batch shape"):
        match_layout(Cameras.stack([lay.cameras()] * 2), lay)


def test_registry():
    assert {"facelift6", "uniform4", "uniform6", "uniform8"} <= set(list_layouts())
    lay = register_layout(ViewLayout.from_azimuths([0, 120, 240], 20, label="test_tri"))
    assert get_layout("test_tri") is lay
    register_layout(lay)  # the same layout again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_layout(uniform_layout(3, label="test_tri"))
    register_layout(uniform_layout(3, label="test_tri"), overwrite=True)
    with pytest.raises(ValueError, match="needs a `name`|give the layout a `name`"):
        register_layout(ViewLayout.from_azimuths([0]))


def test_names_for_every_octant_are_unique():
    names = [ViewLayout.from_azimuths(list(c)).names for c in itertools.combinations(range(0, 360, 45), 3)]
    assert all(len(set(n)) == 3 for n in names)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: ViewLayout(("a", "b"), (0.,), (0., 0.)), ValueError, "one entry per view"),
    (lambda: ViewLayout(("a", "a"), (0., 1.), (0., 0.)), ValueError, "unique"),
    (lambda: ViewLayout(("a", ""), (0., 1.), (0., 0.)), TypeError, "non-empty strings"),
    (lambda: ViewLayout(("a",), (None,), (0.,)), TypeError, "must be numbers"),
    (lambda: ViewLayout(("a",), (0.,), (float("inf"),)), ValueError, "finite"),
    (lambda: ViewLayout(("a",), (0.,), (-90.,)), ValueError, "(-90, 90)"),
    (lambda: ViewLayout((), (), ()), ValueError, "at least one view"),
    (lambda: get_layout("nope"), ValueError, "unknown layout 'nope'"),
    (lambda: uniform_layout(2.5), ValueError, "positive integer"),
    (lambda: register_layout("facelift6"), TypeError, "must be a ViewLayout"),
    (lambda: match_layout(get_layout("uniform4").cameras(), "facelift6"), ValueError,
     "has 4 cameras but layout facelift6 has 6"),
    (lambda: match_layout(get_layout("uniform4").cameras(), "uniform4", subject_center=(0, -2.7, 0)), ValueError,
     "sits at"),
])
def test_layout_error_paths(call, exc, msg):
    with pytest.raises(exc) as e:
        call()
    assert msg in str(e.value)
