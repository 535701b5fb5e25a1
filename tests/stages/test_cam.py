"""CAM stage on the toy data: train (2 iterations), infer, manifests; PSA-format weights give the reference CAMs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from wsss.artifacts import read_manifest
from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import UserError
from wsss.stages import cam_infer, cam_train


@pytest.fixture(scope="module")
def cam_run(toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cam") / "run"
    cfg = cam_train.CamTrainConfig(data=toy_data, split="train", val_split="val", backbone="tiny", out=out,
                                   batch_size=4, crop=48, resize_long=(40, 64), max_iters=2, workers=0,
                                   device="cpu")
    return cam_train.run(cfg)


def test_cam_train_two_iterations(cam_run):
    assert cam_run.kind == "checkpoint" and cam_run.extra["iterations"] == 2
    ckpt = load_checkpoint(cam_run.path / "final.pt")
    assert ckpt["model"] == "cam" and ckpt["model_kwargs"] == {"backbone": "tiny", "num_classes": 20}
    assert 0.0 <= cam_run.extra["metrics"]["mAP"] <= 1.0
    assert read_manifest(cam_run.path, "checkpoint").num_items == len(list(cam_run.path.glob("*.pt")))


def test_cam_infer_artifact(cam_run, toy_data, tmp_path):
    data = open_dataset(toy_data)
    cfg = cam_infer.CamInferConfig(data=toy_data, split="val", weights=cam_run.path / "final.pt",
                                   out=tmp_path / "cams", scales=(1.0, 0.5), device="cpu", save_png=True)
    m = cam_infer.run(cfg)
    ids = data.ids("val")
    assert m.kind == "cam" and m.num_items == len(ids)
    for image_id in ids:
        with np.load(tmp_path / "cams" / f"{image_id}.npz") as z:
            cams, classes = z["cams"], z["classes"]
        h, w = data.read_image(image_id).shape[:2]
        assert cams.dtype == np.float32 and cams.shape == (len(classes), h, w)
        assert classes.dtype == np.int64 and classes.tolist() == data.labels(image_id).tolist()
        assert cams.min() >= 0 and cams.max() < 1
    assert read_manifest(tmp_path / "cams" / "png", "label").num_items == len(ids)
    # Rerun: complete artifact of the same config -> nothing to do (files untouched).
    before = (tmp_path / "cams" / "manifest.json").read_text()
    cam_infer.run(cfg)
    assert (tmp_path / "cams" / "manifest.json").read_text() == before


def test_cam_infer_resumes_after_kill(cam_run, toy_data, tmp_path):
    cfg = cam_infer.CamInferConfig(data=toy_data, split="val", weights=cam_run.path / "final.pt",
                                   out=tmp_path / "cams", scales=(1.0,), device="cpu")
    full = cam_infer.run(cfg)
    victim = sorted((tmp_path / "cams").glob("*.npz"))[3]
    expected = np.load(victim)["cams"]
    victim.unlink()
    (tmp_path / "cams" / "manifest.json").rename(tmp_path / "cams" / "manifest.partial.json")
    with pytest.raises(UserError, match="incomplete"):
        read_manifest(tmp_path / "cams", "cam")
    again = cam_infer.run(cfg)
    assert again.num_items == full.num_items
    np.testing.assert_array_equal(np.load(victim)["cams"], expected)


def test_cam_cli_user_errors(cam_run, toy_data, tmp_path):
    runner = CliRunner()
    w = str(cam_run.path / "final.pt")
    cases = [
        (["cam", "infer", "--data", str(toy_data), "--split", "nope", "--weights", w, "--out", str(tmp_path / "a")],
         "nope"),
        (["cam", "infer", "--data", str(toy_data), "--split", "val", "--weights", str(tmp_path / "missing.pt"),
          "--out", str(tmp_path / "b")], "missing.pt"),
        (["cam", "infer", "--data", str(toy_data), "--split", "val", "--weights", w, "--out", str(tmp_path / "c"),
          "--scales", "1,0"], "--scales"),
        (["cam", "train", "--data", str(tmp_path), "--backbone", "tiny", "--out", str(tmp_path / "d")], str(tmp_path)),
    ]
    for args, needle in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        last = result.output.strip().splitlines()[-1]
        assert needle in last and "Traceback" not in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "d" / "manifest.json").exists()
    # A file that is not a checkpoint of the classifier.
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(cli, ["cam", "infer", "--data", str(toy_data), "--split", "val", "--weights",
                                 str(tmp_path / "junk.pt"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "junk.pt" in result.output.strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------------------------
# PSA's released VGG16 classifier format, checked against an independent plain implementation of the reference.

VGG_CONVS = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
             ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 256, 512),
             ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
             ("conv5_3", 512, 512)]


def psa_vgg16_cls_state_dict(num_classes: int = 20, seed: int = 0) -> dict:
    """Random weights under the exact key names and shapes of PSA's vgg16_cls state_dict (31 tensors)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, cin, cout in VGG_CONVS:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    sd["fc6.weight"] = torch.randn(1024, 512, 3, 3, generator=g) * (2 / (9 * 512)) ** 0.5
    sd["fc6.bias"] = torch.randn(1024, generator=g) * 0.01
    sd["fc7.weight"] = torch.randn(1024, 1024, 1, 1, generator=g) * (2 / 1024) ** 0.5
    sd["fc7.bias"] = torch.randn(1024, generator=g) * 0.01
    sd["fc8.weight"] = torch.randn(num_classes, 1024, 1, 1, generator=g) * 0.05
    return sd


def reference_vgg16_forward_cam(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """PSA vgg16_cls.forward_cam written out from the spec: sqrt(relu(fc8(fc7(fc6(conv5)))))."""
    def conv(h, name, dilation=1):
        return F.relu(F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=dilation, dilation=dilation))

    h = x
    for block, pool_stride in (("1", 2), ("2", 2), ("3", 2), ("4", 1)):
        for name, _, _ in VGG_CONVS:
            if name.startswith(f"conv{block}_"):
                h = conv(h, name)
        h = F.max_pool2d(h, 3, pool_stride, 1)
    for name in ("conv5_1", "conv5_2", "conv5_3"):
        h = conv(h, name, dilation=2)
    h = conv(h, "fc6", dilation=1)  # vgg16_cls: fc6_dilation = 1
    h = F.relu(F.conv2d(h, sd["fc7.weight"], sd["fc7.bias"]))
    return F.relu(F.conv2d(h, sd["fc8.weight"])).sqrt()


def bilinear_resize(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain bilinear resize with half-pixel centres (align_corners=False), edges clamped: (h, w) -> (H, W)."""
    h, w = a.shape

    def coords(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = coords(out_h, h)
    x0, x1, fx = coords(out_w, w)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def test_psa_vgg16_file_gives_reference_cams(toy_data, tmp_path):
    data = open_dataset(toy_data)
    image_id = next(i for i in data.ids("val") if len(data.labels(i)) >= 1)
    sd = psa_vgg16_cls_state_dict()
    torch.save(sd, tmp_path / "vgg16_cls_psa.pth")
    cfg = cam_infer.CamInferConfig(data=toy_data, split="val", weights=tmp_path / "vgg16_cls_psa.pth",
                                   backbone="vgg16", out=tmp_path / "cams", scales=(1.0,), flip=True,
                                   device="cpu")
    cam_infer.run(cfg)
    ours = np.load(tmp_path / "cams" / f"{image_id}.npz")

    # Independent computation: BGR mean-subtracted input, forward_cam on image and flip, plain bilinear resize
    # straight to the image size, label mask, flip back, sum, divide each class by max + 1e-5.
    image = data.read_image(image_id).astype(np.float64)
    x = image[..., ::-1] - np.array([104.008, 116.669, 122.675])
    x = torch.from_numpy(x.transpose(2, 0, 1).copy()).float()[None]
    with torch.no_grad():
        maps = [reference_vgg16_forward_cam(sd, x)[0].double().numpy(),
                reference_vgg16_forward_cam(sd, x.flip(-1))[0].double().numpy()]
    h, w = image.shape[:2]
    labels = data.labels(image_id)
    total = np.zeros((20, h, w))
    for k, m in enumerate(maps):
        up = np.stack([bilinear_resize(c, h, w) for c in m])
        total += up[..., ::-1] if k == 1 else up
    total *= np.isin(np.arange(20), labels)[:, None, None]
    norm = total / (total.reshape(20, -1).max(1)[:, None, None] + 1e-5)
    assert ours["classes"].tolist() == labels.tolist()
    np.testing.assert_allclose(ours["cams"], norm[labels], atol=1e-4)


def test_psa_file_with_a_renamed_key_fails_clearly(toy_data, tmp_path):
    sd = psa_vgg16_cls_state_dict()
    sd["fc8_renamed.weight"] = sd.pop("fc8.weight")
    torch.save(sd, tmp_path / "bad.pth")
    result = CliRunner().invoke(cli, ["cam", "infer", "--data", str(toy_data), "--split", "val", "--weights",
                                      str(tmp_path / "bad.pth"), "--backbone", "vgg16", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "fc8" in last and "Traceback" not in result.output
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("settings", [{"crop": 0}, {"resize_long": (64, 32)}, {"resize_long": (1, 2, 3)},
                                      {"jitter": (0.3, 0.3, -0.1, 0.0)}, {"jitter": (0.3,)}])
def test_augmentation_values_from_a_config_file_are_user_errors(settings):
    with pytest.raises(UserError, match="augmentation settings"):
        cam_train.CamTrainConfig(**settings)
    if "jitter" in settings:
        from wsss.stages.aff_train import AffTrainConfig

        with pytest.raises(UserError, match="augmentation settings"):
            AffTrainConfig(**settings)
