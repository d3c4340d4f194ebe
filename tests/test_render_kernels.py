"""The compiled CPU kernels: C and numba blends agree, parallel binning is the serial one, the C library is cached
across processes, and a missing compiler falls back loudly (never silently) to numba."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from facelift_nb import render_kernels as rk
from facelift_nb.cameras import orbit
from facelift_nb.render import render
from facelift_nb.testing import shell_scene


def _args(g, cam):
    f32 = lambda t: np.ascontiguousarray(t.numpy(), dtype=np.float32)
    H, W = cam.hw
    return (f32(g.means), f32(g.quats), f32(g.scales), f32(g.opacities), f32(g.colors), cam.w2c[0].double().numpy(),
            cam.K[0].double().numpy(), W, H, np.array([0.3, 0.6, 0.9]))


@pytest.mark.parametrize("hw", [(16, 16), (33, 47), (80, 64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_c_and_numba_blends_agree(hw, seed, monkeypatch):
    g = shell_scene(6000, seed=seed, scale_range=(0.003, 0.03))
    cam = orbit([25. * seed], [10.], radius=2.2, fov_deg=35., hw=hw)
    monkeypatch.setenv("FACELIFT_NB_BLEND", "numba")
    a = rk.rasterize(*_args(g, cam))
    monkeypatch.setenv("FACELIFT_NB_BLEND", "c")
    b = rk.rasterize(*_args(g, cam))
    assert np.abs(a[..., :4] - b[..., :4]).max() < 1e-4
    assert np.abs(a[..., 4] - b[..., 4]).max() < 1e-3 * a[..., 4].max()
    assert a[..., 3].max() > 0.9 and a[..., 3].min() < 0.1


def test_many_equal_depths_keep_index_order(monkeypatch):
    # 300 Gaussians at exactly the same depth over one pixel: the radix sort must keep index order in both blends
    n = 300
    gen = torch.Generator().manual_seed(0)
    from facelift_nb.splats import Gaussians
    means = torch.zeros(n, 3)
    means[:, 0] = torch.rand(n, generator=gen) * 0.02  # x varies, depth (y) identical
    rgb = torch.rand(n, 3, generator=gen)
    g = Gaussians(means, torch.tensor([[1., 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 0.02), torch.full((n,), 0.3),
                  ((rgb - 0.5) / 0.28209479)[:, None])
    cam = orbit([0.], hw=(20, 20))
    ref = render(g, cam, backend="torch").rgb
    for impl in ("c", "numba"):
        monkeypatch.setenv("FACELIFT_NB_BLEND", impl)
        assert (render(g, cam, backend="cpu").rgb - ref).abs().max() < 1e-4, impl


def test_parallel_binning_equals_serial():
    rng = np.random.default_rng(0)
    gx, gy, n = 7, 5, 400
    x0, y0 = rng.integers(0, gx, n), rng.integers(0, gy, n)
    x1, y1 = np.minimum(gx, x0 + rng.integers(0, 3, n)), np.minimum(gy, y0 + rng.integers(0, 3, n))
    rect = np.stack([x0, y0, x1, y1], 1).astype(np.int32)
    for chunks in (1, 3, 16):
        offsets, lists = rk.bin_nb(rect, gx, gy, chunks, np.empty(0, np.int32))
        for t in range(gx * gy):
            tx, ty = t % gx, t // gx
            want = [i for i in range(n) if rect[i, 0] <= tx < rect[i, 2] and rect[i, 1] <= ty < rect[i, 3]]
            assert lists[offsets[t]:offsets[t + 1]].tolist() == want


@pytest.mark.parametrize("impl", ["c", "numba"])
def test_empty_and_fully_culled_scenes(impl, monkeypatch):
    monkeypatch.setenv("FACELIFT_NB_BLEND", impl)
    g = shell_scene(50, seed=0)
    cam = orbit([0.], hw=(24, 24))  # the front camera sits at y = -2.7 looking along +y
    behind = g.transform(torch.tensor([[1., 0, 0, 0], [0, 1, 0, -5.], [0, 0, 1, 0], [0, 0, 0, 1]]))  # all at y ~ -5
    bg = np.broadcast_to([0.3, 0.6, 0.9], (24, 24, 3))
    for scene in (behind, g[torch.zeros(len(g), dtype=torch.bool)]):
        out = rk.rasterize(*_args(scene, cam))
        np.testing.assert_allclose(out[..., :3], bg, atol=1e-7)
        assert np.all(out[..., 3] == 0) and np.all(out[..., 4] == 0)


def _run(code, env):
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return res


def test_c_kernel_is_cached_across_processes(tmp_path):
    code = """
        import json, os
        from facelift_nb import render_kernels as rk
        print(json.dumps(rk.kernel_info()))
    """
    env = {"FACELIFT_NB_CACHE": str(tmp_path), "FACELIFT_NB_BLEND": "auto"}
    first = json.loads(_run(code, env).stdout.strip().splitlines()[-1])
    if first["error"]: pytest.skip(f"no C toolchain here: {first['error']}")
    assert first["blend"] == "c" and first["compiled_now"] and first["path"].startswith(str(tmp_path))
    mtime = os.stat(first["path"]).st_mtime_ns
    second = json.loads(_run(code, env).stdout.strip().splitlines()[-1])
    assert not second["compiled_now"] and second["path"] == first["path"]
    assert os.stat(first["path"]).st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [os.path.basename(first["path"])]  # no temp files left


def test_missing_compiler_warns_and_forced_c_raises(tmp_path):
    env = {"FACELIFT_NB_CACHE": str(tmp_path), "CC": "/nonexistent/cc", "PATH": "/nonexistent"}
    code = """
        import warnings, numpy as np, torch, sys
        sys.path[:0] = []
        from facelift_nb.render import render
        from facelift_nb.cameras import orbit
        from facelift_nb.testing import shell_scene
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = render(shell_scene(200), orbit([0.], hw=(16, 16)), backend="cpu")
        msgs = [str(x.message) for x in w if "C blend kernel is unavailable" in str(x.message)]
        assert len(msgs) == 1 and "numba" in msgs[0], [str(x.message) for x in w]
        from facelift_nb import render_kernels as rk
        assert rk.kernel_info()["blend"] == "numba"
        print("ok")
    """
    assert _run(code, {**env, "FACELIFT_NB_BLEND": "auto"}).stdout.strip().endswith("ok")
    forced = subprocess.run([sys.executable, "-c", "from facelift_nb import render_kernels as rk; rk.blend_impl()"],
                            capture_output=True, text=True, env={**os.environ, **env, "FACELIFT_NB_BLEND": "c"})
    assert forced.returncode != 0 and "FACELIFT_NB_BLEND=c but the C kernel is unavailable" in forced.stderr
    bad = subprocess.run([sys.executable, "-c", "from facelift_nb import render_kernels as rk; rk.blend_impl()"],
                         capture_output=True, text=True, env={**os.environ, "FACELIFT_NB_BLEND": "fast"})
    assert bad.returncode != 0 and "must be 'auto', 'c' or 'numba'" in bad.stderr


def test_workspace_is_reused_and_released():
    g = shell_scene(500, seed=3)
    args = _args(g, orbit([0.], hw=(32, 32)))
    rk.rasterize(*args)
    G0 = rk._WS.G
    rk.rasterize(*args)
    assert rk._WS.G is G0
    rk.release_workspace()
    assert not hasattr(rk._WS, "G")
    rk.rasterize(*args)  # works again after release


def test_numba_quaternion_rotation_matches_the_library_one():
    "The kernel's scalar quaternion -> rotation (numba cannot call torch) is the library's `quat_to_rotation`."
    from facelift_nb.cameras import quat_to_rotation
    q = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q[:10] *= 1e-3  # far from unit length: both normalise first
    mine = torch.tensor([rk.quat_rotation_nb(*map(float, qi)) for qi in q], dtype=torch.float64).reshape(-1, 3, 3)
    torch.testing.assert_close(mine, quat_to_rotation(q), atol=1e-12, rtol=0)


def test_rasteriser_constants_are_defined_once():
    "The C program holds none of the constants; the -D flags carry render's values as exact float32 literals."
    from facelift_nb import render as r
    src = rk.c_source()
    for literal in ("#define TILE", "#define ROW", "0.99f", "1e-4f", "255.0f"):
        assert literal not in src, literal
    defs = dict(d[2:].split("=") for d in rk.c_defines())
    assert int(defs["TILE"]) == r.TILE == 16 and int(defs["ROW"]) == rk.ROW
    for name in ("ALPHA_MIN", "ALPHA_MAX", "T_MIN"):
        assert np.float32(float.fromhex(defs[name].rstrip("f"))) == np.float32(getattr(r, name)), name
    assert rk.NEAR is r.NEAR and rk.DILATION is r.DILATION  # numba reads render's globals


def test_c_source_is_package_data():
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facelift_nb"]
    rel = rk.C_SOURCE_PATH.relative_to(root / "facelift_nb").as_posix()
    assert rk.C_SOURCE_PATH.is_file() and any(fnmatch(rel, g) for g in globs), (rel, globs)


def test_c_cache_key_covers_the_constants(tmp_path, monkeypatch):
    "Other constants build (and cache) another library, never reuse one built with the old values."
    cc, flags = rk._compiler(), rk._c_flags()
    if cc is None or os.name == "nt": pytest.skip("no C toolchain here")
    monkeypatch.setenv("FACELIFT_NB_CACHE", str(tmp_path))
    first = {}
    rk._load_c(cc, flags, first)
    orig = rk.c_defines
    other = lambda: [d if not d.startswith("-DT_MIN=") else "-DT_MIN=0x1p-12f" for d in orig()]
    monkeypatch.setattr(rk, "c_defines", other)
    second = {}
    rk._load_c(cc, flags, second)
    assert first["compiled_now"] and second["compiled_now"] and second["path"] != first["path"]
