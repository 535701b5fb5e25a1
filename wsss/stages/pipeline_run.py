"""``wsss pipeline run``: a YAML recipe of stages run in process, each into ``RUN/<stage>/``.

Recipe format (``pipelines/*.yaml``; no Python in them)::

    name: toy_psa            # the method's name in `wsss compare`
    description: ...
    stages:
      - name: cam_train      # folder RUN/cam_train
        run: cam_train       # which stage (a name of wsss.stages.table.STAGES)
        with: {backbone: tiny, split: train, max_iters: 200}
      - name: cam_infer
        run: cam_infer
        report: CAM          # optional: a column of `wsss demo`'s report (cam and label artifacts)
        with: {split: train, weights: ${cam_train}/final.pt}

Strings may use ``${data}`` (the dataset folder), ``${run}`` (the run folder) and ``${<stage name>}`` (that
stage's output folder). ``out`` and ``data`` are filled in when a stage's config has them and the recipe does not
set them. A stage whose output is complete for the same config and inputs is skipped by the stage itself (its
output folder says so), a partial one resumes, and one made with another config or from changed inputs is
redone (so the stages after it are redone too: their inputs' digests changed). A failing stage stops the run,
names itself, and leaves the earlier stages intact.

``reuse`` (``--reuse DIR``, repeatable) names other run folders: a stage with no output yet whose twin lies
complete in one of them (same stage, same config identity, inputs whose digests still match) is copied from
there instead of recomputed (``wsss demo`` shares the toy classifier that several recipes start from this way).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import string
import time
from pathlib import Path
from typing import Optional

from wsss.artifacts import MANIFEST, input_record, write_json_atomic
from wsss.config import identity, load_yaml, resolve
from wsss.errors import UserError
from wsss.process import LOG, setup_logging
from wsss.stages.table import stage_names, stage_row

STAGE_KEYS = {"name", "run", "with", "report"}  # `report`: the column title of the stage in `wsss demo`'s report

@dataclasses.dataclass(frozen=True)
class PipelineRunConfig:
    recipe: Optional[Path] = None
    data: Optional[Path] = None
    out: Optional[Path] = None
    start: Optional[str] = None
    stop: Optional[str] = None
    overrides: tuple = ()
    device: Optional[str] = None
    workers: Optional[int] = None
    reuse: tuple = ()  # other run folders whose complete stages may be copied (see the module docstring)


@dataclasses.dataclass
class StageResult:
    name: str
    run: str
    status: str
    seconds: float
    out: str
    summary: str = ""


def load_recipe(path: Path, overrides: tuple = ()) -> dict:
    """Read and check a recipe; ``overrides`` are ``stage.key=value`` strings (values parsed as YAML)."""
    import yaml

    recipe = load_yaml(path)
    stages = recipe.get("stages")
    if not isinstance(stages, list) or not stages:
        raise UserError(f"{path}: a recipe needs a non-empty list 'stages'")
    unknown = sorted(set(recipe) - {"name", "description", "stages"})
    if unknown:
        raise UserError(f"{path}: unknown recipe key(s) {', '.join(unknown)} (known: name, description, stages)")
    names = []
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or "name" not in st or "run" not in st:
            raise UserError(f"{path}: stage {i + 1} needs 'name' and 'run'")
        if st["run"] not in stage_names():
            raise UserError(f"{path}: stage {st['name']!r} runs unknown stage {st['run']!r} "
                            f"(known: {', '.join(sorted(stage_names()))})")
        unknown = sorted(set(st) - STAGE_KEYS)
        if unknown:
            raise UserError(f"{path}: stage {st['name']!r} has unknown key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(STAGE_KEYS))})")
        if st["name"] in names:
            raise UserError(f"{path}: stage name {st['name']!r} appears twice")
        names.append(st["name"])
        st.setdefault("with", {})
    for item in overrides:
        key, sep, value = item.partition("=")
        stage, dot, option = key.partition(".")
        if not sep or not dot or stage not in names:
            raise UserError(f"--set {item!r}: expected STAGE.OPTION=VALUE with STAGE one of {', '.join(names)}")
        stages[names.index(stage)]["with"][option] = yaml.safe_load(value)
    recipe.setdefault("name", Path(path).stem)
    return recipe


def _substitute(value, mapping: dict, where: str):
    if isinstance(value, str):
        try:
            return string.Template(value).substitute(mapping)
        except KeyError as e:
            raise UserError(f"{where}: ${{{e.args[0]}}} names no earlier stage (known: {', '.join(mapping)})") from None
    if isinstance(value, list):
        return [_substitute(v, mapping, where) for v in value]
    return value


def _stage_config(stage: dict, module, cls, mapping: dict, cfg: PipelineRunConfig, recipe_path: Path):
    """The stage's config: recipe values (with ${...} filled in) and the runtime flags of the command.

    A stage with its own ``resolve_config(recipe=, flags=)`` (e.g. per-backbone defaults) is asked to resolve;
    otherwise :func:`wsss.config.resolve` is used.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: _substitute(v, mapping, f"{recipe_path}: stage {stage['name']}") for k, v in stage["with"].items()}
    if "out" in fields:
        values.setdefault("out", str(Path(cfg.out) / stage["name"]))
    if "data" in fields:
        values.setdefault("data", str(cfg.data))
    # The run folder's stage folders belong to the pipeline: a stage whose config or inputs changed is redone
    # (overwrite applies only then; the same config still resumes a partial folder or skips a complete one).
    runtime = {"device": cfg.device, "workers": cfg.workers, "overwrite": True}
    flags = {k: v for k, v in runtime.items() if v is not None and k in fields}
    resolver = getattr(getattr(module, "STAGE", None), "resolve_config", None)
    if resolver is not None:
        return resolver(recipe=values, flags=flags)
    return resolve(cls, recipe=values, flags=flags)


def _same_json(a, b) -> bool:
    dump = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731 (paths and tuples as written)
    return dump(json.loads(json.dumps(a, default=str))) == dump(b)


def _twin(stage: str, stage_cfg, sources: tuple) -> Optional[Path]:
    """A complete output of ``stage`` in a folder of ``sources`` with ``stage_cfg``'s identity and unchanged
    inputs, or None."""
    want = identity(stage_cfg)
    for source in sources:
        for manifest in sorted(Path(source).glob(f"*/{MANIFEST}")):
            try:
                m = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if m.get("stage") != stage or not _same_json(want, m.get("config")):
                continue
            inputs = m.get("inputs") or {}
            try:
                if all(input_record(Path(rec["path"])) == rec for rec in inputs.values()):
                    return manifest.parent
            except (OSError, KeyError, TypeError):
                continue
    return None


def _reuse(stage: str, stage_cfg, out: Path, sources: tuple) -> Optional[Path]:
    """Copy a twin (see :func:`_twin`) into ``out`` when ``out`` does not exist yet; returns the twin or None."""
    if not sources or out.exists():
        return None
    twin = _twin(stage, stage_cfg, sources)
    if twin is None or twin.resolve() == out.resolve():
        return None
    tmp = out.with_name(out.name + ".reuse-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(twin, tmp, symlinks=True)
    tmp.rename(out)
    LOG.info("%s: copied from the complete twin %s", out, twin)
    return twin


def _summary(manifest_or_metrics) -> str:
    if isinstance(manifest_or_metrics, dict):
        m = manifest_or_metrics
        curve = m.get("curve")
        if curve:
            return f"{m['split']}: best mIoU {100 * curve['best_miou']:.1f} at threshold {curve['best_threshold']:g}"
        if m.get("miou") is not None:
            return f"{m['split']}: mIoU {100 * m['miou']:.1f} (foreground only {100 * m['miou_foreground']:.1f})"
        return ""
    return f"{manifest_or_metrics.num_items} {manifest_or_metrics.kind} item(s)"


def run(cfg: PipelineRunConfig) -> list[StageResult]:
    """Run the recipe's stages in order (between ``start`` and ``stop``); returns one result per stage."""
    setup_logging()
    if cfg.recipe is None or cfg.data is None or cfg.out is None:
        raise UserError("a recipe, --data and --out are required")
    recipe = load_recipe(Path(cfg.recipe), cfg.overrides)
    names = [s["name"] for s in recipe["stages"]]
    for opt, name in (("--from", cfg.start), ("--until", cfg.stop)):
        if name is not None and name not in names:
            raise UserError(f"{opt} {name}: no such stage in {cfg.recipe} (stages: {', '.join(names)})")
    first = names.index(cfg.start) if cfg.start else 0
    last = names.index(cfg.stop) if cfg.stop else len(names) - 1
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    mapping = {"data": str(cfg.data), "run": str(run_dir), **{n: str(run_dir / n) for n in names}}
    results = []
    for i, stage in enumerate(recipe["stages"]):
        if not first <= i <= last:
            continue
        module = importlib.import_module(stage_row(stage["run"]).module)
        stage_cfg = _stage_config(stage, module, module.STAGE.config, mapping, cfg, Path(cfg.recipe))
        out = Path(getattr(stage_cfg, "out", None) or run_dir / stage["name"])
        LOG.info("pipeline %s: stage %s (%s)", recipe["name"], stage["name"], stage["run"])
        t0 = time.perf_counter()
        twin = _reuse(module.STAGE.name, stage_cfg, out, tuple(cfg.reuse))
        before = (out / MANIFEST).stat().st_mtime_ns if (out / MANIFEST).is_file() else None
        try:
            result = module.run(stage_cfg)
        except UserError as e:
            raise UserError(f"stage {stage['name']} ({stage['run']}) failed: {e}") from None
        after = (out / MANIFEST).stat().st_mtime_ns if (out / MANIFEST).is_file() else None
        status = "skipped" if before is not None and before == after else "ran"
        status = "copied" if twin is not None and status == "skipped" else status
        results.append(StageResult(stage["name"], stage["run"], status, time.perf_counter() - t0, str(out),
                                   _summary(result)))
    write_json_atomic(run_dir / "pipeline.json", {
        "kind": "pipeline", "name": recipe["name"], "recipe": str(Path(cfg.recipe).resolve()),
        "data": str(Path(cfg.data).resolve()), "stages": names,
        "results": [dataclasses.asdict(r) for r in results]})
    return results


def format_results(results: list[StageResult]) -> str:
    rows = [("stage", "status", "seconds", "result")]
    rows += [(r.name, r.status, f"{r.seconds:.1f}", r.summary) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def read_pipeline(run_dir: Path) -> Optional[dict]:
    p = Path(run_dir) / "pipeline.json"
    return json.loads(p.read_text()) if p.is_file() else None
