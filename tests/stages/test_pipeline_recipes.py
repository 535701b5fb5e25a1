"""Every recipe of ``pipelines/`` loads and every stage of it resolves to a valid config (nothing is run), and the
COCO recipes carry the settings they state (issue 12)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from wsss.stages import pipeline_run
from wsss.stages.table import stage_row

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
RECIPES = sorted(PIPELINES.glob("*.yaml"))


def recipe_configs(path: Path) -> dict:
    """Stage name -> the config the pipeline would run it with; ``${name}`` may only name an earlier stage."""
    recipe = pipeline_run.load_recipe(path)
    run_cfg = pipeline_run.PipelineRunConfig(recipe=path, data=Path("d"), out=Path("r"))
    mapping, configs = {"data": "d", "run": "r"}, {}
    for stage in recipe["stages"]:
        module = importlib.import_module(stage_row(stage["run"]).module)
        configs[stage["name"]] = pipeline_run._stage_config(stage, module, module.STAGE.config, mapping, run_cfg,
                                                            path)
        mapping[stage["name"]] = f"r/{stage['name']}"
    return configs


def test_the_coco_recipes_are_there():
    assert {"psa_coco.yaml", "single_stage_coco.yaml", "wsfcn_coco.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_resolves(path):
    recipe = pipeline_run.load_recipe(path)
    assert recipe["name"] == path.stem and recipe.get("description")
    configs = recipe_configs(path)
    assert list(configs) == [s["name"] for s in recipe["stages"]]
    for name, cfg in configs.items():
        assert cfg.out == Path("r") / name or name.startswith("eval")


def test_psa_coco_trains_and_evaluates_on_coco_splits():
    """psa.yaml's stages with `train` for train_aug, PSA's VOC values elsewhere, an ImageNet-only final network."""
    coco, voc = recipe_configs(PIPELINES / "psa_coco.yaml"), recipe_configs(PIPELINES / "psa.yaml")
    assert {cfg.split for cfg in coco.values()} == {"train", "val"}
    for name in ("cam_train", "crf_la", "crf_ha", "aff_train", "aff_infer_val", "seg_infer_val_crf"):
        assert coco[name] == voc[name].__class__(**{**vars(voc[name]), "split": coco[name].split}), name
    assert coco["cam_train"].val_split == "val" and coco["cam_train"].epochs == 15 and coco["aff_train"].epochs == 8
    walk = coco["aff_infer_train"]
    assert (walk.split, walk.alpha, walk.beta, walk.logt) == ("train", 16, 8, 8)
    assert coco["seg_train"].labels == Path("r/aff_infer_train") and coco["seg_train"].init_weights is None
    assert coco["seg_train"].recipe == "psa" and coco["seg_train"].model == "deeplabv1_resnet38"


def test_single_stage_coco_takes_wsfcn_coco_settings():
    coco = recipe_configs(PIPELINES / "single_stage_coco.yaml")
    wsfcn = recipe_configs(PIPELINES / "wsfcn_coco.yaml")
    train = coco["single_train"]
    assert train.model == "single_stage" and (train.split, train.val_split) == ("train", "val")
    for key in ("pamr_iterations", "focal_lambda", "pseudo_floor", "pseudo_bg_ratio"):
        assert getattr(train, key) == getattr(wsfcn["single_train"], key), key
    assert (train.pamr_iterations, train.focal_lambda, train.pseudo_floor, train.pseudo_bg_ratio) == (5, 0.1, 0.1, 0.8)
    voc = recipe_configs(PIPELINES / "single_stage.yaml")["single_train"]
    assert (train.epochs, train.lr, train.crop) == (voc.epochs, voc.lr, voc.crop)
    infer = ("single_infer_val", "single_infer_val_crf", "single_infer_train_clean")
    assert {coco[name].pad_size for name in infer} == {1304}
    assert coco["single_infer_train_clean"].clean and coco["single_infer_val_crf"].crf
