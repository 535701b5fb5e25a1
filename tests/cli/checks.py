"""Shared assertion for command-line tests: a user error is one clear line and exit code 2."""


def assert_user_error(result, *fragments):
    """``result`` (a CliRunner result) exited 2 with exactly one error line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("wsss: error:", "Error:"))]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
