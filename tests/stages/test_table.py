"""The stage table: every row is a runnable stage with a generated command, known to pipelines and compare."""
from __future__ import annotations

import dataclasses
import importlib

import pytest
from click.testing import CliRunner

from wsss.cli.main import cli
from wsss.config import field_metadata
from wsss.stages import table

ROWS = [row for row in table.STAGES if row.command]


@pytest.mark.parametrize("row", table.STAGES, ids=lambda r: r.name)
def test_row_names_a_stage_module(row):
    module = importlib.import_module(row.module)
    assert module.STAGE.name == row.name and callable(module.run)
    assert dataclasses.is_dataclass(module.STAGE.config)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_generated_command_has_the_config_options(row):
    result = CliRunner().invoke(cli, [row.group, row.command, "--help"])
    assert result.exit_code == 0, result.output
    config = importlib.import_module(row.module).STAGE.config
    for f in dataclasses.fields(config):
        meta = field_metadata(config, f.name)
        if "help" in meta:
            assert f"--{f.name.replace('_', '-')}" in result.output, f.name
    assert "--config" in result.output


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_missing_required_option_is_a_usage_error(row):
    result = CliRunner().invoke(cli, [row.group, row.command])
    assert result.exit_code == 2 and "Missing option" in result.output and "Traceback" not in result.output


def test_compare_order_follows_the_table():
    names = table.stage_names()
    assert [table.compare_order(n) for n in names] == sorted(table.compare_order(n) for n in names)
    assert table.compare_order("cam_infer") < table.compare_order("cam_png") < table.compare_order("crf_labels")
    assert table.compare_order("not_a_stage") > max(table.compare_order(n) for n in names)


def test_every_group_has_a_help_line_and_a_command():
    assert {row.group for row in ROWS} == set(table.GROUPS)
