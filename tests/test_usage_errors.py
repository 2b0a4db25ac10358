"""Bad command lines read like every other bad input: one ``error:`` line, exit 2, no traceback.

Typer's own usage errors (an unknown option, a bad value, a missing option) used to be a
five-line box; agents and scripts parse the first stderr line.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.server.main import parse_args

BAD = [
    ["introspect", "attribute", "-m", "demo", "-p", "x", "--layer-strategy", "bogus"],
    ["introspect", "compare", "-p", "x", "--prompt-b", "y"],
    ["introspect", "analyze", "-m", "demo", "-p", "x", "--top-k", "many"],
    ["introspect", "families", "--bogus"],
    ["serve", "--memory-budget", "lots"],
    ["no-such-command"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a[:2]))
def test_cli_usage_error_is_one_line(argv: list[str]) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--help" in lines[0] and "Traceback" not in result.output


def test_server_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_args(["--port", "notaport"])
    assert done.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: Invalid value for '--port'")


def test_help_still_prints() -> None:
    result = CliRunner().invoke(app, ["introspect", "--help"])
    assert result.exit_code == 0 and "attribute" in result.stdout and "compare" in result.stdout
    bare = CliRunner().invoke(app, [])
    assert bare.exit_code == 2 and "introspect" in bare.stdout
