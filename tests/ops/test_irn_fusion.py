"""IRN's make_cam fusion (irn.md §2.4): full-size CAM upsampled to the 16-rounded size then cropped, stride-4 CAM
resized straight to its grid, both summed over scales and max-normalised per class."""
import pytest
import torch
import torch.nn.functional as F

from wsss.ops.irn import fuse_cams_irn


def test_constant_maps_give_constant_cams():
    high_res, stride4 = fuse_cams_irn([torch.full((2, 3, 4), 2.0), torch.full((2, 2, 2), 5.0)], (37, 50))
    assert high_res.shape == (2, 37, 50) and stride4.shape == (2, 10, 13)
    torch.testing.assert_close(high_res, torch.full_like(high_res, 7 / (7 + 1e-5)))
    torch.testing.assert_close(stride4, torch.full_like(stride4, 7 / (7 + 1e-5)))


def test_upsample_then_crop_is_not_a_resize():
    m = torch.arange(12.0).reshape(1, 3, 4)
    high_res, stride4 = fuse_cams_irn([m], (40, 60))  # 16-rounded: 48 x 64, cropped to 40 x 60
    up = F.interpolate(m[None], size=(48, 64), mode="bilinear", align_corners=False)[0, :, :40, :60]
    torch.testing.assert_close(high_res, up / (up.max() + 1e-5))
    straight = F.interpolate(m[None], size=(40, 60), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(high_res, straight / (straight.max() + 1e-5), atol=1e-3)
    small = F.interpolate(m[None], size=(10, 15), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(stride4, small / (small.max() + 1e-5))


def test_no_classes_and_bad_input():
    high_res, stride4 = fuse_cams_irn([torch.zeros(0, 4, 4)], (13, 15))
    assert high_res.shape == (0, 13, 15) and stride4.shape == (0, 4, 4)
    with pytest.raises(ValueError, match="maps must be"):
        fuse_cams_irn([torch.zeros(2, 4, 4), torch.zeros(3, 4, 4)], (8, 8))
    with pytest.raises(ValueError, match="maps must be"):
        fuse_cams_irn([], (8, 8))
