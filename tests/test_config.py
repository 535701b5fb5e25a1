"""Config resolution: precedence, unknown keys, coercion, and the identity that decides output reuse."""
import dataclasses
from pathlib import Path
from typing import Optional

import pytest

from wsss.config import identity, resolve, runtime
from wsss.errors import UserError


@dataclasses.dataclass(frozen=True)
class Cfg:
    data: Optional[Path] = None
    out: Optional[Path] = None
    alpha: float = 4.0
    scales: tuple[float, ...] = (1.0,)
    steps: int = 2
    flip: bool = True
    workers: int = runtime(0)


def test_precedence_default_recipe_file_flag(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("alpha: 8\nsteps: 5\n")
    cfg = resolve(Cfg, recipe={"alpha": 6, "scales": [1, 0.5]}, config_file=f, flags={"steps": 7, "flip": None})
    assert (cfg.alpha, cfg.steps, cfg.scales, cfg.flip) == (8.0, 7, (1.0, 0.5), True)
    assert resolve(Cfg, flags={"scales": "1,0.5"}).scales == (1.0, 0.5)


@pytest.mark.parametrize("layer, message", [
    ({"bogus": 1}, "unknown option"), ({"steps": 1.5}, "expects an integer"), ({"flip": "yes"}, "true or false"),
    ({"alpha": "x"}, "expects float"), ({"scales": "1,a"}, "comma-separated"),
])
def test_bad_values_are_user_errors(layer, message):
    with pytest.raises(UserError, match=message):
        resolve(Cfg, recipe=layer)


def test_bad_config_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve(Cfg, config_file=tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UserError, match="expected a mapping"):
        resolve(Cfg, config_file=tmp_path / "list.yaml")


def test_identity_ignores_runtime_fields_out_and_path_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = resolve(Cfg, flags={"data": "d", "out": "o", "workers": 2})
    b = resolve(Cfg, flags={"data": str(tmp_path / "d"), "out": str(tmp_path / "elsewhere"), "workers": 0})
    assert identity(a) == identity(b) and "out" not in identity(a) and "workers" not in identity(a)
    assert identity(a) != identity(resolve(Cfg, flags={"data": "d", "alpha": 5}))
