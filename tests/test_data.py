"""ImageTransform: images, points, intrinsics and cameras move together through crops, pads, resizes and recentring."""
import pytest
import torch
import torch.nn.functional as F

from facelift_nb.data import ImageTransform
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
    torch.testing.assert_close(padded[:, :, :3, :], torch.tensor([1., 0.5, 0.])[None, :, None, None].expand(2, 3, 3, 50))
    torch.testing.assert_close(padded[..., 3:, 2:], img, atol=1e-6, rtol=0)
    half = ImageTransform.identity((64, 48)).resize((32, 24)).image(img)
    torch.testing.assert_close(half, F.avg_pool2d(img, 2), atol=1e-5, rtol=0)  # shrinking averages, no aliasing


def test_recenter_frames_the_mask():
    m = torch.zeros(100, 200); m[20:60, 120:140] = 1
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
