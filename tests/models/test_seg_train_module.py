"""SegTrainModule: every logits map supervised, aux weighted, all-ignore batches finite."""
import pytest
import torch
from torch import nn

from wsss.models.train_module import TrainModule
from wsss.models import build_model
from wsss.models.seg_train_module import SegTrainModule
from wsss.ops.seg_loss import cross_entropy, resize_labels


class FixedOutputs(nn.Module):
    """A stand-in network returning given maps (times a learnable scale)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image):
        return {k: v * self.scale for k, v in self.outputs.items()}

    def param_groups(self, lr, weight_decay):
        return [{"params": [self.scale], "lr": lr}]


def test_msc_network_all_four_outputs_supervised():
    torch.manual_seed(0)
    net = build_model("deeplabv2_resnet101", backbone="tiny", num_classes=3).train()
    module = SegTrainModule(net)
    assert isinstance(module, TrainModule) and module.param_groups(1.0, 0.0)
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, 3, (2, 64, 64), dtype=torch.uint8)}
    out = module(batch)
    assert set(out) == {"loss", "ce", "ce_full", "ce_s0.5", "ce_s0.75"}
    torch.testing.assert_close(out["loss"].detach(), out["ce"] + out["ce_full"] + out["ce_s0.5"] + out["ce_s0.75"])
    out["loss"].backward()
    assert net.aspp.c0.weight.grad.abs().sum() > 0


def test_all_ignore_batch_gives_zero_loss_and_finite_gradients():
    torch.manual_seed(0)
    net = build_model("deeplabv2_resnet101", backbone="tiny", num_classes=3).train()
    for loss in ("ce", "balanced_ce"):
        net.zero_grad()
        out = SegTrainModule(net, loss=loss)({"image": torch.randn(2, 3, 32, 32),
                                             "mask": torch.full((2, 32, 32), 255)})
        assert float(out["loss"].detach()) == 0.0
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_aux_logits_weighted_and_labels_resized():
    torch.manual_seed(1)
    logits, aux = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 16, 16)
    module = SegTrainModule(FixedOutputs({"logits": logits, "aux_logits": aux, "features": torch.randn(1, 8)}))
    mask = torch.randint(0, 4, (1, 16, 16))
    out = module({"image": torch.zeros(1, 3, 16, 16), "mask": mask})
    assert set(out) == {"loss", "ce", "aux_ce"}
    expected = cross_entropy(logits, resize_labels(mask, (4, 4))) + 0.5 * cross_entropy(aux, mask)
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_bad_configuration():
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        SegTrainModule(FixedOutputs({}), loss="focal")
    with pytest.raises(ValueError, match="no logits"):
        SegTrainModule(FixedOutputs({"features": torch.zeros(1)}))({"image": torch.zeros(1), "mask": torch.zeros(1)})
