"""ImageTransform: images, points, intrinsics and cameras move together through crops, pads, resizes and recentring."""
import pytest
import torch
import torch.nn.functional as F

from facelift_nb.framing import ImageTransform
from facelift_nb.layouts import get_layout


def test_steps_match_cameras_crop_and_resize():
    cams = get_layout("facelift6").cameras(hw=(512, 512))
    T = ImageTransform.identity((512, 512)).crop((40, -20, 440, 380)).resize((200, 200)).pad(5, 6, 7, 8)
    want = cams.crop((40, -20, 440, 380)).resize((200, 200)).crop((-5, -6, 207, 208))
    moved = T.cameras(cams)
    torch.testing.assert_close(moved.K, want.K)
    assert moved.hw == want.hw == (214, 212)
    back = T.inverse()
    xy = torch.rand(10, 2) * 512
    torch.testing.assert_close(back.points(T.points(xy)), xy, atol=1e-4, rtol=0)
    torch.testing.assert_close(T.then(back).points(xy), xy, atol=1e-4, rtol=0)
    assert T.to_dict()["out_hw"] == [214, 212]


def test_images_resample_consistently():
    img = torch.rand(2, 3, 64, 48)
    torch.testing.assert_close(ImageTransform.identity((64, 48)).image(img), img, atol=1e-6, rtol=0)
    crop = ImageTransform.identity((64, 48)).crop((8, 4, 40, 36)).image(img)
    torch.testing.assert_close(crop, img[..., 4:36, 8:40], atol=1e-6, rtol=0)  # whole-pixel crops are exact
    padded = ImageTransform.identity((64, 48)).pad(2, 3, 0, 0).image(img, fill=(1., 0.5, 0.))
    fill = torch.tensor([1., 0.5, 0.])[None, :, None, None].expand(2, 3, 3, 50)
    torch.testing.assert_close(padded[:, :, :3, :], fill)
    torch.testing.assert_close(padded[..., 3:, 2:], img, atol=1e-6, rtol=0)
    half = ImageTransform.identity((64, 48)).resize((32, 24)).image(img)
    torch.testing.assert_close(half, F.avg_pool2d(img, 2), atol=1e-5, rtol=0)  # shrinking averages, no aliasing


def test_recenter_frames_the_mask():
    m = torch.zeros(100, 200)
    m[20:60, 120:140] = 1
    T = ImageTransform.recenter(m, 64, fill=0.5)
    corners = T.points(torch.tensor([[120., 20.], [140., 60.]]))
    torch.testing.assert_close(corners.mean(0), torch.tensor([32., 32.]))
    assert abs((corners[1] - corners[0]).max().item() - 32) < 1e-4  # the longer side fills half


def test_errors():
    T = ImageTransform.identity((32, 32))
    with pytest.raises(ValueError, match="cannot chain"):
        T.resize((16, 16)).then(T)
    with pytest.raises(ValueError, match="expects \\(32, 32\\)"):
        T.image(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="cameras are for"):
        T.cameras(get_layout("facelift6").cameras(hw=(64, 64)))
    with pytest.raises(ValueError, match="mask is empty"):
        ImageTransform.recenter(torch.zeros(8, 8), 4)
    with pytest.raises(ValueError, match="scales must be positive"):
        ImageTransform((4, 4), (4, 4), sx=0.)
    with pytest.raises(ValueError, match="`hw` must be"):
        ImageTransform.identity((0, 4))
    with pytest.raises(ValueError, match="x1 > x0"):
        T.crop((5, 5, 5, 9))


# ---- normalize_rig ---------------------------------------------------------------------------------------------
from facelift_nb.data import normalize_rig  # noqa: E402
from facelift_nb.layouts import match_layout  # noqa: E402
from facelift_nb.render import render  # noqa: E402
from facelift_nb.testing import head_scene  # noqa: E402


def _foreign_world():
    "Z-up metres -> Y-up millimetres with the subject off-centre (a similarity with scale 1000)."
    yup = torch.tensor([[1., 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    T = torch.diag(torch.tensor([1000., 1000, 1000, 1])) @ yup
    T[:3, 3] = torch.tensor([120., 40., -300.])
    return T


def test_normalize_rig_with_masks_recovers_the_facelift_rig():
    perm = [2, 5, 0, 3, 1, 4]
    canon = get_layout("facelift6").cameras(hw=(64, 64))
    T = _foreign_world()
    raw = canon[perm].transform(T)
    head = head_scene(3000)
    masks = render(head.transform(T), raw, backend="cpu").alpha  # what the real rig's cameras would see
    res = normalize_rig(raw, masks=masks, front_camera=perm.index(0))
    # the head's visual centre, within 4 cm
    torch.testing.assert_close(res.center.float(), torch.tensor([120., 40., -300.]), atol=40., rtol=0)
    assert res.reprojection_px.max() < 1.5  # the triangulated centre lands on every mask centroid
    assert abs(res.scale - 1e-3) < 1e-4 and res.fits_volume and 0.3 < res.subject_radius < 0.91
    m = match_layout(res.cameras, "facelift6", max_residual_deg=3.)
    assert list(m.indices) == [perm.index(j) for j in range(6)]
    assert "fits the working volume" in str(res)


def test_normalize_rig_reports_an_oversized_subject_and_refuses_bad_rigs():
    canon = get_layout("facelift6").cameras(hw=(64, 64))
    big = render(head_scene(2000).transform(torch.diag(torch.tensor([2.2, 2.2, 2.2, 1.]))), canon, backend="cpu").alpha
    res = normalize_rig(canon, masks=big)
    assert res.fits_volume is False and "does NOT fit" in str(res)
    away = canon.transform(torch.eye(4))
    flipped = Cameras_from(away)
    with pytest.raises(ValueError, match="do not face"):
        normalize_rig(flipped)
    with pytest.raises(ValueError, match="empty"):
        normalize_rig(canon, masks=torch.zeros(6, 64, 64))
    with pytest.raises(ValueError, match="masks` must be"):
        normalize_rig(canon, masks=torch.ones(6, 32, 32))
    with pytest.raises(ValueError, match="front_camera"):
        normalize_rig(canon, front_camera=9)


def Cameras_from(cams):
    "The same rig with every camera turned around (looking away from the subject)."
    import dataclasses
    turn = torch.diag(torch.tensor([-1., 1., -1., 1.]))  # rotate 180° about the camera's y axis
    return dataclasses.replace(cams, w2c=turn @ cams.w2c)
