"""``wsss models list``: names, parameter counts and init-weight files."""
from click.testing import CliRunner

from wsss.cli.main import cli


def _rows(output: str) -> dict:
    rows = {}
    for line in output.strip().splitlines()[1:]:
        cells = line.split()
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_models_list():
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows[("wideresnet38", "-")][:2] == ["105,070,912", "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"]
    assert rows[("vgg16", "-")][:2] == ["20,483,904", "vgg16_20M.pth"]
    assert rows[("resnet50", "-")][1] == "resnet50-19c8e357.pth"
    assert rows[("resnet101", "-")][1] == "resnet101-5d3b4d8f.pth"
    assert rows[("cam", "wideresnet38")] == ["105,152,832", "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "res38_cls.pth"]
    assert rows[("aff", "wideresnet38")] == ["106,484,032", "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "res38_aff.pth"]
    assert ("aff", "tiny") in rows and ("cam", "resnet101") in rows
    assert rows[("tiny", "-")][1:] == ["(none:", "from", "scratch)", "-"]


def test_models_help():
    result = CliRunner().invoke(cli, ["models", "--help"])
    assert result.exit_code == 0 and "list" in result.output
