"""The base of every train module: a registered network plus the loss the engine minimises.

It lives with the networks (a method = network + loss + recipe); the engine only calls what is described below.

A train module wraps one network (``self.network``, the part that is checkpointed) and returns
``{"loss": scalar, <named terms>...}`` from ``forward(batch)``. Optional hooks the engine calls:
``set_epoch(epoch)`` at each epoch start (warm-up rules), and ``visuals(batch) -> {name: (3, H, W) in [0, 1]}``
for TensorBoard.

Example:
    >>> class MyLoss(TrainModule):
    ...     def forward(self, batch):
    ...         logits = self.network(batch["image"])["logits"]
    ...         return {"loss": F.multilabel_soft_margin_loss(logits, batch["label"])}
"""
from __future__ import annotations

from torch import nn


class TrainModule(nn.Module):
    """A network and its loss; learning-rate groups are the network's own."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The network's reference learning-rate groups (see :mod:`wsss.models.param_groups`)."""
        return self.network.param_groups(lr, weight_decay)

    def forward(self, batch: dict) -> dict:  # pragma: no cover - every method defines its loss
        raise NotImplementedError(f"{type(self).__name__} must define forward(batch) -> {{'loss': ...}}")
