"""to_mesh on subjects with a known surface (Chamfer bound, watertight, colours), mesh files and bad input."""
import sys

import numpy as np
import pytest
import torch

from facelift_nb.cameras import orbit
from facelift_nb.mesh import (
    MESH_FORMATS,
    Mesh,
    chamfer_distance,
    is_watertight,
    load_mesh,
    render_mesh,
    sample_surface,
    save_mesh,
    to_mesh,
)
from facelift_nb.splats import SH_C0, Gaussians
from facelift_nb.synthetic import make_subject

pytest.importorskip("skimage")  # the `mesh` extra (in `dev` too)
trimesh = pytest.importorskip("trimesh")

# A head 1.0 tall (z from -0.4 to 0.6), a nose and two ears: (centre, radii) of each ellipsoid.
PARTS = [((0., 0., 0.1), (0.38, 0.42, 0.5)), ((0., -0.42, 0.05), (0.06, 0.08, 0.1)),
         ((-0.38, 0., 0.1), (0.05, 0.1, 0.14)), ((0.38, 0., 0.1), (0.05, 0.1, 0.14))]
HEAD_HEIGHT = 1.0


def _ellipsoid_points(centre, radii, n: int, rng) -> np.ndarray:
    "`n` points uniform over an ellipsoid's area (directions on the sphere, kept in proportion to the area element)."
    c, (a, b, cc) = np.asarray(centre), radii
    d = rng.normal(size=(4 * n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    dens = np.sqrt((d[:, 0] * b * cc) ** 2 + (a * d[:, 1] * cc) ** 2 + (a * b * d[:, 2]) ** 2)
    d = d[rng.random(len(d)) < dens / dens.max()][:n]
    return c + d * np.asarray(radii)


def true_surface(per_unit_area: float, seed: int) -> np.ndarray:
    "Points of the union's outer surface: each part's surface points that lie inside no other part."
    rng, out = np.random.default_rng(seed), []
    for i, (c, r) in enumerate(PARTS):
        a, b, cc = r
        area = 4 * np.pi * (((a * b) ** 1.6 + (a * cc) ** 1.6 + (b * cc) ** 1.6) / 3) ** (1 / 1.6)  # Thomsen
        p = _ellipsoid_points(c, r, int(per_unit_area * area), rng)
        for j, (c2, r2) in enumerate(PARTS):
            if j != i: p = p[(((p - np.asarray(c2)) / np.asarray(r2)) ** 2).sum(1) >= 1]
        out.append(p)
    return np.concatenate(out)


def known_subject(sigma: float = 0.012, seed: int = 0) -> Gaussians:
    "Isotropic Gaussians (σ, opacity 0.95) on the true surface, about 2 per σ² of area; red above z = 0.1, blue below."
    p = torch.tensor(true_surface(2 / sigma ** 2, seed), dtype=torch.float32)
    N = len(p)
    rgb = torch.where(p[:, 2:] > 0.1, torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
    quats = torch.tensor([[1., 0., 0., 0.]]).expand(N, 4).clone()
    return Gaussians(p, quats, torch.full((N, 3), sigma), torch.full((N,), 0.95), ((rgb - 0.5) / SH_C0)[:, None])


@pytest.fixture(scope="module")
def known():
    g = known_subject()
    return g, to_mesh(g, resolution=96, views=32, image_size=160)


def test_chamfer_to_the_true_surface_is_within_two_percent_of_the_head(known):
    # 2% of the head height. The splats' visible surface lies about one σ (0.012) outside the centres; marching
    # cubes adds a fraction of a voxel (0.012 here); the bound leaves little room beyond those two.
    g, mesh = known
    truth = true_surface(100_000, seed=1)
    d = chamfer_distance(sample_surface(mesh, 50_000), truth)
    print(f"Chamfer {d:.4f} ({100 * d / HEAD_HEIGHT:.2f}% of the head height), {mesh}")
    assert d <= 0.02 * HEAD_HEIGHT, d
    assert is_watertight(mesh)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0  # closed, faces pointing out
    true_volume = 4 / 3 * np.pi * 0.38 * 0.42 * 0.5  # the head ellipsoid alone; nose and ears add about 2%
    assert true_volume < tm.volume < 1.25 * true_volume, tm.volume


def test_vertex_colours_follow_the_surface(known):
    g, mesh = known
    c, z = mesh.colors.astype(float) / 255, mesh.vertices[:, 2]
    clear = np.abs(z - 0.1) > 0.05  # away from the seam, where renders blend the two colours
    red = np.array([0.9, 0.1, 0.1])
    blue = np.array([0.1, 0.1, 0.9])
    err = np.where((z > 0.1)[:, None], c - red, c - blue)[clear]
    assert np.abs(err).mean() < 0.03 and np.percentile(np.abs(err).max(1), 99) < 0.15


@pytest.mark.parametrize("kind, seed", [("head", 3), ("mouse", 4)])
def test_synthetic_subjects_give_one_closed_piece_near_the_splats(kind, seed):
    from scipy.spatial import cKDTree
    g = make_subject(seed, kind)
    mesh = to_mesh(g, resolution=64, views=20, image_size=96)
    assert is_watertight(mesh)
    d = cKDTree(g.means.numpy()).query(mesh.vertices)[0]
    sigma = float(g.scales.median())
    # about one σ outside the layer of centres (see Conventions), never far from any splat
    assert d.mean() < 1.6 * sigma and d.max() < 4 * sigma, (d.mean(), d.max(), sigma)
    tree = cKDTree(g.means.numpy())
    near_colour = g.colors.clamp(0, 1).numpy()[tree.query(mesh.vertices, k=8)[1]].mean(1)
    assert np.abs(mesh.colors[:, :3] / 255 - near_colour).mean() < 0.12


@pytest.fixture(scope="module")
def small_mesh():
    return to_mesh(make_subject(0, "head"), resolution=48, views=12, image_size=64)


@pytest.mark.parametrize("suffix", MESH_FORMATS)
def test_files_read_back_with_trimesh(small_mesh, tmp_path, suffix):
    path = save_mesh(small_mesh, tmp_path / f"m{suffix}")
    tm = trimesh.load(path, process=False, force="mesh")
    assert len(tm.vertices) == small_mesh.num_vertices and len(tm.faces) == small_mesh.num_faces
    assert tm.visual.kind == "vertex"
    np.testing.assert_array_equal(np.asarray(tm.visual.vertex_colors)[:, :3], small_mesh.colors[:, :3])
    if suffix == ".glb":  # glTF is Y-up: world z is the file's y, world -y (toward the front camera) its z
        np.testing.assert_allclose(tm.vertices, small_mesh.vertices[:, [0, 2, 1]] * [1, 1, -1], atol=1e-6)
    else:
        np.testing.assert_allclose(tm.vertices, small_mesh.vertices, atol=1e-6)
    back = load_mesh(path)
    np.testing.assert_allclose(back.vertices, small_mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, small_mesh.faces)


def test_save_is_atomic(small_mesh, tmp_path, monkeypatch):
    path = save_mesh(small_mesh, tmp_path / "m.ply")
    before = path.read_bytes()
    def broken(self, *a, **k): raise OSError("disk full")
    monkeypatch.setattr(trimesh.Trimesh, "export", broken)
    with pytest.raises(OSError, match="disk full"): save_mesh(small_mesh, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.ply"]


def test_bad_input_is_refused(small_mesh, tmp_path):
    g = make_subject(0, "head")
    with pytest.raises(TypeError, match="`gaussians` must be Gaussians"): to_mesh(g.means)
    with pytest.raises(ValueError, match="`resolution` must be an integer"): to_mesh(g, resolution=2.5)
    with pytest.raises(ValueError, match="`views` must be an integer >= 2"): to_mesh(g, views=1)
    with pytest.raises(ValueError, match="`box` must have finite lo < hi"): to_mesh(g, box=((0, 0, 0), (0, 1, 1)))
    with pytest.raises(ValueError, match="no surface in the box"):  # a box far from the subject
        to_mesh(g, resolution=16, views=4, image_size=16, box=((5, 5, 5), (6, 6, 6)))
    with pytest.raises(ValueError, match="must end in one of"): save_mesh(small_mesh, tmp_path / "m.stl")
    with pytest.raises(TypeError, match="`mesh` must be a Mesh"): save_mesh(g, tmp_path / "m.glb")
    with pytest.raises(ValueError, match="floats in \\[0, 1\\]"):
        Mesh(small_mesh.vertices, small_mesh.faces, np.full((small_mesh.num_vertices, 3), np.nan))
    with pytest.raises(ValueError, match="one camera"): render_mesh(small_mesh, orbit([0., 90.], hw=(8, 8)))


def test_missing_optional_packages_name_the_extra(monkeypatch, small_mesh, tmp_path):
    monkeypatch.setitem(sys.modules, "skimage.measure", None)
    with pytest.raises(ImportError, match=r"facelift-nb\[mesh\]"): to_mesh(make_subject(0, "head"))
    monkeypatch.setitem(sys.modules, "trimesh", None)
    with pytest.raises(ImportError, match=r"facelift-nb\[mesh\]"): save_mesh(small_mesh, tmp_path / "m.glb")
