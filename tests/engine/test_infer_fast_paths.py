"""The fast paths of the per-image loop (:mod:`wsss.engine.inference`) against the plain ones, on the toy data with
random tiny networks: DataLoader workers (the same items, bit for bit), channels-last (within 1e-5), the stages'
inference-mode, image-and-flip batches against a plain per-scale, per-flip, batch-1 loop written here (within
1e-5), ``--amp`` (refused off CUDA; the wrapped network hands back fp32) and the runtime options' identity."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.cli.main import cli
from wsss.config import identity
from wsss.data.prepared import open_dataset
from wsss.engine.checkpoint import save_checkpoint
from wsss.engine.distributed import DistInfo
from wsss.engine.infer_runtime import prepare_network
from wsss.engine.inference import Context
from wsss.errors import UserError
from wsss.models.registry import build_model
from wsss.models.weights import load_network
from wsss.stages import cam_infer, irn_infer, seam_infer, seg_infer, single_infer

# case -> (stage module, network, its kwargs, config fields)
CASES = {
    "cam": (cam_infer, "cam", {"num_classes": 20}, {"scales": (1.0, 0.5)}),
    "irn_cam": (cam_infer, "irn_cam", {"num_classes": 20}, {"scales": (1.0, 0.5)}),
    "seam": (seam_infer, "seam", {"num_classes": 20}, {"scales": (1.0, 0.5)}),
    "single_stage": (single_infer, "single_stage", {"num_classes": 21}, {"scales": (1.0, 0.5), "pad_size": 72}),
    "seg": (seg_infer, "deeplabv2_resnet101", {"num_classes": 21}, {"scales": (1.0, 0.75), "flip": True,
                                                                     "fuse": "mean"}),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random tiny networks as our checkpoints: network name -> path."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, kwargs in [(c[1], c[2]) for c in CASES.values()] + [("irn", {})]:
        torch.manual_seed(0)
        network = build_model(name, backbone="tiny", **kwargs)
        paths[name] = folder / f"{name}.pt"
        save_checkpoint(paths[name], model_name=name, model_kwargs={"backbone": "tiny", **kwargs},
                        state_dict=network.state_dict(), config={}, epoch=0, iteration=0, with_rng=False)
    return paths


def run_case(case: str, toy_data, weights, out, **fields):
    module, network, _, config = CASES[case]
    cfg = module.STAGE.config(data=toy_data, split="val", weights=weights[network], out=out, device="cpu",
                              **{**config, **fields})
    return module.run(cfg)


def read_items(folder) -> dict:
    """Every item of an artifact folder: file name -> {array name -> array}."""
    items = {path.name: dict(np.load(path)) for path in sorted(folder.glob("*.npz"))}
    items.update({path.name: {"labels": np.asarray(Image.open(path))} for path in sorted(folder.glob("*.png"))})
    assert items
    return items


@pytest.fixture(scope="module", params=list(CASES))
def plain(request, toy_data, weights, tmp_path_factory):
    """(case, folder) of a run with --workers 0 and the default memory format."""
    out = tmp_path_factory.mktemp(request.param) / "plain"
    run_case(request.param, toy_data, weights, out, workers=0)
    return request.param, out


def test_workers_write_the_same_items(plain, toy_data, weights, tmp_path, monkeypatch):
    case, folder = plain
    made = []
    loader = torch.utils.data.DataLoader
    monkeypatch.setattr(torch.utils.data, "DataLoader", lambda *a, **k: made.append(k) or loader(*a, **k))
    run_case(case, toy_data, weights, tmp_path / "w2", workers=2)
    assert [k["num_workers"] for k in made] == [2] and made[0]["batch_size"] is None
    expected, got = read_items(folder), read_items(tmp_path / "w2")
    assert got.keys() == expected.keys()
    for name, arrays in expected.items():
        assert got[name].keys() == arrays.keys()
        for key, array in arrays.items():
            np.testing.assert_array_equal(got[name][key], array, err_msg=f"{case} {name} {key}")


@pytest.mark.parametrize("plain", ["cam", "irn_cam", "seam"], indirect=True)  # label stages: scores, below
def test_channels_last_cams_within_1e5(plain, toy_data, weights, tmp_path):
    case, folder = plain
    run_case(case, toy_data, weights, tmp_path / "cl", channels_last=True)
    expected, got = read_items(folder), read_items(tmp_path / "cl")
    for name, arrays in expected.items():
        for key, array in arrays.items():
            np.testing.assert_allclose(got[name][key], array, rtol=0, atol=1e-5, err_msg=f"{case} {name} {key}")


def context(case: str, toy_data, weights, channels_last: bool = False) -> Context:
    """The context a stage's ``load`` and ``predict`` get, without ``run``."""
    module, network, _, config = CASES[case]
    cfg = module.STAGE.config(data=toy_data, split="val", weights=weights[network], out="unused", device="cpu",
                              channels_last=channels_last, **config)
    net = prepare_network(load_network(cfg.weights), cfg, torch.device("cpu"))
    cfg = module.STAGE.settle(cfg, net)
    return Context(cfg, open_dataset(toy_data), torch.device("cpu"), DistInfo(), net, net.normalization)


def stage_scores(case: str, ctx: Context, image_id: str) -> torch.Tensor:
    """The label stages' scores before the argmax, through the stage's ``load`` and under inference mode."""
    loaded = CASES[case][0].STAGE.load(ctx, image_id)
    with torch.inference_mode():
        if case == "seg":
            return seg_infer.fuse_logits(ctx.network, loaded["inputs"], loaded["image"].shape[:2], ctx.cfg)
        masks, probs = single_infer.padded_masks(ctx.network, loaded["inputs"], loaded["image"].shape[:2], True)
        return torch.cat([masks.flatten(), probs])


@pytest.mark.parametrize("case", ["single_stage", "seg"])
def test_channels_last_scores_within_1e5(case, toy_data, weights):
    plain_ctx, cl_ctx = (context(case, toy_data, weights, cl) for cl in (False, True))
    assert any(p.ndim == 4 and not p.is_contiguous() for p in cl_ctx.network.parameters())  # 3x3 kernels: NHWC
    for image_id in plain_ctx.data.ids("val")[:3]:
        torch.testing.assert_close(stage_scores(case, cl_ctx, image_id), stage_scores(case, plain_ctx, image_id),
                                   rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the reference formulation: batch 1, no_grad
def resized(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image if size == (w, h) else np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def one_input(ctx: Context, image: np.ndarray, scale: float, flipped: bool) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(ctx.normalization.apply(resized(image, scale))))[None].float()
    return x.flip(-1) if flipped else x


@torch.no_grad()
def reference_psa_cams(ctx: Context, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """PSA's infer_cls: per scale and flip, one batch-1 forward_cam, upsampled, flipped back, summed, max-divided."""
    h, w = image.shape[:2]
    total = 0
    for scale in ctx.cfg.scales:
        for flipped in (False, True):
            cam = ctx.network.forward_cam(one_input(ctx, image, scale, flipped))
            up = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0]
            total = total + (up.flip(-1) if flipped else up)
    cams = total[torch.from_numpy(classes)]
    return (cams / (cams.flatten(1).amax(1)[:, None, None] + 1e-5)).numpy()


@torch.no_grad()
def reference_single(ctx: Context, image: np.ndarray) -> torch.Tensor:
    """1-stage-wseg's infer_val: per scale and flip, one centre-padded batch-1 pass; mean masks, max probability."""
    h, w = image.shape[:2]
    size, masks, probs = ctx.cfg.pad_size, [], []
    for scale in ctx.cfg.scales:
        for flipped in (False, True):
            x = one_input(ctx, image, scale, flipped)
            sh, sw = x.shape[-2:]
            top, left = (size - sh) // 2, (size - sw) // 2
            out = ctx.network(F.pad(x, [left, size - sw - left, top, size - sh - top]))
            m = F.interpolate(out["masks"][:, :, top:top + sh, left:left + sw], size=(h, w), mode="bilinear",
                              align_corners=False)[0]
            masks.append(m.flip(-1) if flipped else m)
            probs.append(torch.sigmoid(out["scores"][0]))
    return torch.cat([torch.stack(masks).mean(0).flatten(), torch.stack(probs).amax(0)])


@torch.no_grad()
def reference_seg(ctx: Context, image: np.ndarray) -> torch.Tensor:
    """Per scale and flip one batch-1 pass; logits upsampled, flipped back, averaged."""
    h, w = image.shape[:2]
    logits = []
    for scale in ctx.cfg.scales:
        for flipped in (False, True):
            out = F.interpolate(ctx.network(one_input(ctx, image, scale, flipped))["logits"], size=(h, w),
                                mode="bilinear", align_corners=False)[0]
            logits.append(out.flip(-1) if flipped else out)
    return torch.stack(logits).mean(0)


def test_cam_artifact_equals_the_batch1_reference(toy_data, weights, tmp_path):
    run_case("cam", toy_data, weights, tmp_path / "cams", workers=2)
    ctx = context("cam", toy_data, weights)
    for image_id in ctx.data.ids("val"):
        with np.load(tmp_path / "cams" / f"{image_id}.npz") as item:
            cams, classes = item["cams"], item["classes"]
        expected = reference_psa_cams(ctx, ctx.data.read_image(image_id), classes)
        np.testing.assert_allclose(cams, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case, reference", [("single_stage", reference_single), ("seg", reference_seg)])
def test_label_scores_equal_the_batch1_reference(case, reference, toy_data, weights):
    ctx = context(case, toy_data, weights)
    for image_id in ctx.data.ids("val")[:3]:
        expected = reference(ctx, ctx.data.read_image(image_id))
        torch.testing.assert_close(stage_scores(case, ctx, image_id), expected, rtol=0, atol=1e-5)


def test_irn_infer_workers_write_the_same_labels(toy_data, weights, tmp_path):
    run_case("irn_cam", toy_data, weights, tmp_path / "cams", scales=(1.0,))
    runs = {}
    for workers in (0, 2):
        cfg = irn_infer.IrnInferConfig(data=toy_data, split="val", weights=weights["irn"], cams=tmp_path / "cams",
                                       out=tmp_path / f"irn{workers}", pad=64, device="cpu", workers=workers)
        irn_infer.run(cfg)
        runs[workers] = read_items(tmp_path / f"irn{workers}")
    assert runs[0].keys() == runs[2].keys()
    for name in runs[0]:
        np.testing.assert_array_equal(runs[2][name]["labels"], runs[0][name]["labels"])


# -------------------------------------------------------------------------------- errors and runtime options
def test_a_load_error_in_a_worker_is_one_user_error_line(toy_data, weights, tmp_path):
    messages = []
    for workers in (0, 2):
        with pytest.raises(UserError) as error:
            run_case("single_stage", toy_data, weights, tmp_path / f"w{workers}", workers=workers, pad_size=40)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "--pad-size 40" in messages[0] and "\n" not in messages[0]


def test_amp_is_refused_on_cpu_before_anything_is_written(toy_data, weights, tmp_path):
    result = CliRunner().invoke(cli, ["cam", "infer", "--data", str(toy_data), "--split", "val", "--weights",
                                      str(weights["cam"]), "--out", str(tmp_path / "out"), "--device", "cpu",
                                      "--amp"])
    assert_user_error(result, "--amp", "CUDA")
    assert not (tmp_path / "out").exists()


class Bf16Net(torch.nn.Module):
    normalization = None

    def forward(self, x):
        return {"masks": x.bfloat16(), "index": torch.zeros(1, dtype=torch.long), "pair": (x.half(), 1)}


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_amp_network_hands_back_fp32():
    cfg = types.SimpleNamespace(amp=True, channels_last=False)
    out = prepare_network(Bf16Net(), cfg, torch.device("cpu"))(torch.ones(1, 3, 2, 2))
    assert out["masks"].dtype == torch.float32 and out["index"].dtype == torch.long
    assert out["pair"][0].dtype == torch.float32 and out["pair"][1] == 1


def test_speed_options_stay_out_of_the_identity_but_amp_does_not(toy_data, weights):
    # Layout, workers and device do not change the items; bf16 does, so an artifact resumed or reused under the
    # other precision would mix items of both: amp is part of what decides reuse (as in training).
    for module in (cam_infer, seam_infer, single_infer, seg_infer, irn_infer):
        cfg = module.STAGE.config(data=toy_data, weights=weights["cam"], out="o")
        assert not {"workers", "channels_last", "device"} & identity(cfg).keys()
        assert identity(cfg)["amp"] is False
