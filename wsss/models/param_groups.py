"""The learning-rate groups of the references, written once.

Every trainable parameter lands in one of four groups (PSA ``get_parameter_groups``, 1-stage-wseg
``parameter_groups``):

=================  ==================  ============
group              learning rate       weight decay
=================  ==================  ============
pretrained_weight  ``lr * mults[0]``   yes
pretrained_bias    ``lr * mults[1]``   no
new_weight         ``lr * mults[2]``   yes
new_bias           ``lr * mults[3]``   no
=================  ==================  ============

"New" means from scratch: the parameter lives under one of the ``new`` sub-module names (e.g. ``fc8``). A
parameter whose own name is ``bias`` is a bias (conv, BN and GN biases alike); everything else is a weight (so a
norm layer's scale gets weight decay, as in the references). Parameters with ``requires_grad=False`` (frozen
early blocks, frozen BN) are in no group. The multipliers are (1, 2, 10, 20) for WideResNet-38 and VGG16 and
(1, 1, 10, 10) for the ResNets (1-stage-wseg ``_lr_mult``); networks take them from their backbone.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from torch import nn

GROUP_NAMES = ("pretrained_weight", "pretrained_bias", "new_weight", "new_bias")
PSA_LR_MULTS = (1.0, 2.0, 10.0, 20.0)


def param_groups(module: nn.Module, lr: float, weight_decay: float, *, new: Iterable[str] = (),
                 mults: Sequence[float] = PSA_LR_MULTS) -> list[dict]:
    """Split the trainable parameters of ``module`` into the four reference groups.

    Args:
        module: the network.
        lr: base learning rate.
        weight_decay: weight decay of the weight groups (biases get 0).
        new: names of the from-scratch sub-modules (as in ``module.named_modules()``).
        mults: learning-rate multipliers of (pretrained weights, pretrained biases, new weights, new biases).

    Returns:
        Non-empty groups in the order above, each ``{"name", "params", "lr", "lr_mult", "weight_decay"}``.

    Raises:
        ValueError: if a name in ``new`` is not a sub-module of ``module``.
    """
    new = tuple(new)
    modules = dict(module.named_modules())
    unknown = [n for n in new if n not in modules]
    if unknown or len(mults) != 4:
        raise ValueError(f"param_groups: unknown new modules {unknown} or not 4 multipliers {tuple(mults)}")
    buckets: dict[str, list] = {name: [] for name in GROUP_NAMES}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        is_new = any(name.startswith(prefix + ".") for prefix in new)
        is_bias = name.rsplit(".", 1)[-1] == "bias"
        buckets[GROUP_NAMES[2 * is_new + is_bias]].append(param)
    groups = []
    for i, name in enumerate(GROUP_NAMES):
        if buckets[name]:
            groups.append({"name": name, "params": buckets[name], "lr": lr * mults[i], "lr_mult": float(mults[i]),
                           "weight_decay": 0.0 if i % 2 else weight_decay})
    return groups
