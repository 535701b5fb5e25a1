"""tools/weight_conversion.py: the check against a backbone, the write, and a strict ``--init-weights`` load."""
import hashlib
import json

import numpy as np
import pytest
import torch

from wsss.errors import UserError
from wsss.models import build_backbone
from wsss.models.weights import load_backbone_init


def tiny_arrays(seed=0) -> dict:
    """Random arrays under the ``tiny`` backbone's keys, as a converter hands them over (no counters)."""
    rng = np.random.default_rng(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_backbone("tiny").state_dict().items()}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()
            if not k.endswith("num_batches_tracked")}


def test_md5_and_listing_hand_worked(conversion, tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert conversion.md5sum(tmp_path / "abc") == "900150983cd24fb0d6963f7d28e17f72"
    assert conversion.listing(list("abcdefgh")) == "8 (a, b, c, d, e, f, ...)"


def test_input_conventions_come_from_the_backbones(conversion):
    vgg = conversion.input_convention("vgg16")
    assert vgg["channel_order"] == "BGR" and vgg["pixel_scale"] == 1.0
    assert vgg["mean"] == (104.008, 116.669, 122.675) and vgg["std"] == (1.0, 1.0, 1.0)
    wrn = conversion.input_convention("wideresnet38")
    assert wrn["channel_order"] == "RGB" and wrn["pixel_scale"] == 255.0 and wrn["std"] == (0.229, 0.224, 0.225)


def test_written_file_loads_strictly_with_init_weights(conversion, tmp_path):
    arrays = tiny_arrays()
    arrays["stem.1.bias"] = arrays["stem.1.bias"].reshape(1, 1, 1, -1)  # a Caffe legacy blob shape
    fitted = conversion.fit_to_backbone(arrays, "tiny", "x")
    assert fitted["stem.1.bias"].shape == (16,)
    out = tmp_path / "init.pth"
    count = conversion.write_converted(out, fitted, {"backbone": "tiny"})
    assert count == sum(a.size for a in arrays.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init.json", "init.pth"]  # no .part left behind
    meta = json.loads((tmp_path / "init.json").read_text())
    assert meta == {"backbone": "tiny", "weights_file": "init.pth", "tensors": len(arrays), "values": count}
    backbone = build_backbone("tiny")
    load_backbone_init(backbone, out)
    state = backbone.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.reshape(state[k].shape)) for k, v in arrays.items())


def test_existing_output_is_refused_unless_overwrite(conversion, tmp_path):
    out = tmp_path / "init.pth"
    conversion.write_converted(out, {"a": np.zeros(2, np.float32)}, {})
    with pytest.raises(UserError, match="already exists"):
        conversion.write_converted(out, {"a": np.ones(2, np.float32)}, {})
    assert torch.load(out, weights_only=True)["a"].sum() == 0
    conversion.write_converted(out, {"a": np.ones(2, np.float32)}, {}, overwrite=True)
    assert torch.load(out, weights_only=True)["a"].sum() == 2
    with pytest.raises(UserError, match="cannot end in .json"):
        conversion.write_converted(tmp_path / "w.json", {"a": np.ones(2, np.float32)}, {})


def test_missing_extra_and_misshaped_keys_are_named(conversion):
    arrays = tiny_arrays()
    del arrays["stage6.4.running_var"]
    arrays["head.weight"] = np.zeros(3, np.float32)
    arrays["stem.0.weight"] = np.zeros((16, 3, 3, 1), np.float32)
    with pytest.raises(UserError) as err:
        conversion.fit_to_backbone(arrays, "tiny", "x.params")
    message = str(err.value)
    assert "missing 1 (stage6.4.running_var)" in message and "unexpected 1 (head.weight)" in message
    assert "stem.0.weight (16, 3, 3, 1) vs (16, 3, 3, 3)" in message


def test_describe_source(conversion, tmp_path):
    path = tmp_path / "w.params"
    path.write_bytes(b"abc")
    assert conversion.describe_source(path, hashlib.md5(b"abc").hexdigest())["is_release"] is True
    assert conversion.describe_source(path, "0" * 32)["is_release"] is False
    assert conversion.describe_source(path, None)["is_release"] is None
