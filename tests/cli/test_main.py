"""The top-level command: lazy help, version, and how user errors reach the terminal."""
from click.testing import CliRunner

from wsss.cli.main import LazyGroup, cli, user_message
from wsss.errors import UserError


def test_help_and_version_list_every_group():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("data", "cam", "crf", "aff", "single", "eval", "pipeline", "compare", "demo", "models", "viz"):
        assert f"  {name} " in result.output
    assert CliRunner().invoke(cli, ["--version"]).output.startswith("wsss, version ")


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from wsss.cli.main import main; sys.argv=['wsss','--help']\ntry: main()\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_worker_wrapped_user_error_becomes_one_line():
    wrapped = UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\n    raise UserError(...)\n"
                        "wsss.errors.UserError: mask 'la' of image 2007_000032 is 10x10, expected 12x12\n")
    assert user_message(wrapped) == "mask 'la' of image 2007_000032 is 10x10, expected 12x12"
    assert user_message(UserError("plain")) == "plain"


def test_unavailable_command_is_a_clear_error():
    # Every group of DESIGN.md is built now (PLANNED is empty): a group with a planned entry shows the answer.
    group = LazyGroup("wsss", lazy={"later": (None, "Not built yet.")})
    result = CliRunner().invoke(group, ["later", "train"])
    assert result.exit_code == 2 and "not available" in result.output.strip().splitlines()[-1]
