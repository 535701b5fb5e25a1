"""Optional extra arrays of a ``cam`` item (IRN's stride-4 CAM): written, read back on request, ignored otherwise."""
import numpy as np
import pytest

from wsss.artifacts.items import FORMATS
from wsss.errors import UserError

FMT = FORMATS["cam"]


def test_extras_round_trip_and_are_ignored_by_default(tmp_path):
    cams = np.random.default_rng(0).random((2, 9, 7), dtype=np.float32)
    stride4 = np.random.default_rng(1).random((2, 3, 2), dtype=np.float32)
    FMT.write(tmp_path / "a.npz", cams, np.array([3, 11]), {"cams_stride4": stride4})
    plain = FMT.read(tmp_path / "a.npz", (9, 7), 20)
    assert len(plain) == 2 and plain[1].tolist() == [3, 11]
    got, classes, extras = FMT.read(tmp_path / "a.npz", (9, 7), 20, extras=True)
    np.testing.assert_array_equal(got, cams)
    assert list(extras) == ["cams_stride4"] and np.array_equal(extras["cams_stride4"], stride4)
    FMT.write(tmp_path / "b.npz", cams, np.array([3, 11]))
    assert FMT.read(tmp_path / "b.npz", extras=True)[2] == {}


def test_bad_extras(tmp_path):
    cams = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="may not be named"):
        FMT.write(tmp_path / "a.npz", cams, np.array([0, 1]), {"classes": np.zeros(2)})
    FMT.write(tmp_path / "b.npz", cams, np.array([0, 1]), {"cams_stride4": np.zeros((3, 1, 1), np.float32)})
    with pytest.raises(UserError, match="one row per class"):
        FMT.read(tmp_path / "b.npz", extras=True)
    FMT.write(tmp_path / "c.npz", cams, np.array([0, 1]), {"cams_stride4": np.full((2, 1, 1), np.nan, np.float32)})
    with pytest.raises(UserError, match="NaN"):
        FMT.read(tmp_path / "c.npz", num_classes=20, extras=True)
