"""The one training engine, shared by every training stage.

Usage from a stage (see :mod:`wsss.stages.cam_train` for a complete example)::

    @dataclasses.dataclass(frozen=True)
    class MyTrainConfig(TrainConfig):      # loop settings + the stage's own fields
        data: Path = None
        backbone: str = "tiny"

    def run(cfg: MyTrainConfig) -> Manifest:
        def build():
            module = MyTrainModule(network)  # forward(batch) -> {"loss": ..., terms}; .network; .param_groups()
            return module, dataset           # dataset items are dicts; default collate stacks them
        return fit(cfg, stage="my_train", build=build, model_name="cam", model_kwargs={...},
                   split=cfg.split, inputs={"data": input_record(cfg.data)}, validate=optional_fn)

What you get: poly LR (power 0.9) with per-group ``lr_mult``; SGD (optionally PSA's momentum quirk) or Adam;
``RUN/last.pt`` for resume (``--resume`` or automatically for a partial run of the same config), ``RUN/final.pt``
and ``RUN/best_e{E}_s{score}.pt``; ``log.jsonl`` + TensorBoard (``RUN/tb``) + progress bar; NaN/inf loss stops with
a :class:`~wsss.errors.UserError` naming the iteration; DDP under ``torchrun`` (NCCL on CUDA, gloo on CPU) with a
global batch size split across processes; ``--amp bf16|fp16`` (fp16 on CUDA only), ``--channels-last`` and
``--grad-checkpoint`` (the backbone's blocks recomputed in the backward pass). The train module may define
``set_epoch(epoch)`` (called at each epoch start) and ``visuals(batch)`` (images for TensorBoard).

Checkpoint format: ``{"model", "model_kwargs", "state_dict", "config", "epoch", "iteration", "optimizer",
"rng"}``; read with :func:`wsss.engine.checkpoint.load_checkpoint`.
"""
from wsss.engine.config import TrainConfig
from wsss.engine.fit import fit

__all__ = ["TrainConfig", "fit"]
