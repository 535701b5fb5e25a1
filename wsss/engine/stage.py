"""A training stage declares what differs between methods; :meth:`TrainingStage.run` does everything else.

What a stage declares (class attributes and small methods of a :class:`TrainingStage` subclass):

- ``name`` (the stage name in manifests and recipes) and ``config`` (its frozen config dataclass, a
  :class:`TrainStageConfig`, whose defaults are the method's published recipe);
- ``network`` (the registry name; :meth:`network_name` may take it from the config) and :meth:`network_kwargs`;
- :meth:`train_module` (the loss, a :class:`~wsss.models.train_module.TrainModule`);
- :meth:`dataset` (the augmentation recipe is the config's ``transform_recipe()``, checked when it is built);
- optionally :meth:`validator` (a validation metric; ``score`` selects the best checkpoint), :meth:`hooks` (its
  own engine hooks), :meth:`check_inputs`, :meth:`input_artifacts` (artifact folders the stage reads, recorded in
  the manifest).

What the engine owns (:meth:`TrainingStage.run`): required options, the dataset and its splits, the init weights
(checked, loaded into the backbone, recorded), building the network from the registry once, the transform with
the network's own input normalisation, hooks, the loop (:func:`~wsss.engine.fit.fit`) and the manifest.

Example (a complete stage)::

    class MyTrain(TrainingStage):
        name, config, network = "my_train", MyTrainConfig, "cam"

        def train_module(self, network, cfg):
            return MyLoss(network)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from wsss.artifacts import Manifest, input_record
from wsss.config import option
from wsss.engine.config import TrainConfig
from wsss.engine.fit import fit
from wsss.engine.hooks import Hook, Validation
from wsss.models.train_module import TrainModule
from wsss.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainStageConfig(TrainConfig):
    """The fields every training stage on a prepared dataset has (the loop settings come from TrainConfig)."""

    data: Optional[Path] = option(None, "Prepared dataset folder (from `wsss data prepare`).", required=True)
    split: str = option("train_aug", "Split to train on, e.g. train, train_aug.")
    backbone: str = option("wideresnet38", "Backbone from the model zoo.", type="backbone")
    init_weights: Optional[Path] = option(None, "ImageNet initialisation of the backbone (or one of our "
                                                "checkpoints on the same backbone).")

    def __post_init__(self):
        super().__post_init__()
        try:
            self.transform_recipe()
        except ValueError as e:  # values from --config or a recipe skip click's range checks
            raise UserError(f"augmentation settings: {e}") from None

    def transform_recipe(self):
        """The augmentation recipe (a :class:`~wsss.data.transforms.JointTransformConfig`): none by default."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig()


class TrainingStage:
    """The training-stage skeleton; subclasses declare the method (see the module docstring)."""

    name: str = ""
    config: type = TrainStageConfig
    network: str = ""

    # ------------------------------------------------------------------------------------- what a stage declares
    def network_name(self, cfg) -> str:
        return self.network

    def network_kwargs(self, cfg, data) -> dict:
        return {"backbone": cfg.backbone}

    def train_module(self, network, cfg) -> TrainModule:
        raise NotImplementedError(f"{type(self).__name__} must define train_module(network, cfg)")

    def dataset(self, cfg, data, transform):
        from wsss.data.torch_datasets import ClassificationDataset

        return ClassificationDataset(data, cfg.split, transform=transform)

    def validator(self, cfg, data, module: TrainModule):
        """``network -> dict`` of metrics, or None for no validation."""
        return None

    def hooks(self, cfg, data, module: TrainModule) -> list[Hook]:
        """The stage's own engine hooks (e.g. a pass over the data after training, before ``final.pt``)."""
        return []

    def check_inputs(self, cfg, data) -> None:
        """Refuse bad inputs before anything is written (the split exists, input artifacts cover it...)."""
        data.ids(cfg.split)

    def input_artifacts(self, cfg) -> dict:
        """Artifact folders the stage reads: manifest key -> path."""
        return {}

    def summary(self, manifest: Manifest) -> str:
        """The line the command prints when it is done."""
        best = f", best {manifest.extra['best']}" if manifest.extra.get("best") else ""
        return (f"{self.name.replace('_', ' ')}: {manifest.path}/{manifest.extra.get('final', 'final.pt')} "
                f"({manifest.extra.get('iterations')} iterations{best})")

    # --------------------------------------------------------------------------------------- what the engine does
    def run(self, cfg) -> Manifest:
        """Train into ``cfg.out``; returns the run's ``checkpoint`` manifest."""
        from wsss.data.prepared import open_dataset

        if cfg.data is None:
            raise UserError("--data is required")
        data = open_dataset(cfg.data)
        self.check_inputs(cfg, data)
        if cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
            raise UserError(f"--init-weights {cfg.init_weights}: file not found")
        name, kwargs = self.network_name(cfg), self.network_kwargs(cfg, data)

        def build():
            return self._build(cfg, data, name, kwargs)

        inputs = {"data": input_record(cfg.data)}
        inputs.update({key: input_record(path) for key, path in self.input_artifacts(cfg).items()})
        if cfg.init_weights is not None:
            inputs["init_weights"] = {"path": str(Path(cfg.init_weights).resolve())}
        return fit(cfg, stage=self.name, build=build, model_name=name, model_kwargs=kwargs, split=cfg.split,
                   inputs=inputs, classes=data.classes)

    def _build(self, cfg, data, name: str, kwargs: dict) -> tuple:
        """The network (built once, init weights loaded), its train module, the dataset and the stage's hooks."""
        from wsss.data.transforms import JointTransform
        from wsss.models.registry import build_model

        network = build_model(name, **kwargs)
        if cfg.init_weights is not None:
            from wsss.models.weights import load_backbone_init

            load_backbone_init(network.backbone, cfg.init_weights)
        module = self.train_module(network, cfg)
        dataset = self.dataset(cfg, data, JointTransform(cfg.transform_recipe(), network.normalization))
        validate = self.validator(cfg, data, module)
        hooks: list[Hook] = [Validation(validate)] if validate is not None else []
        return module, dataset, hooks + self.hooks(cfg, data, module)
