"""The CLI's files and arguments at their edges: output targets that are not files, prompt files
that are not files, bytes that are not UTF-8. Each ends in one ``error:`` line with exit 2 and
leaves what was there untouched. Only temp dirs are used (a FIFO stands in for a device node)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from lazarus_cli.main import app

runner = CliRunner()
ANALYZE = ["introspect", "analyze", "-m", "demo", "--raw"]


def _one_line_error(result: Result) -> str:
    code, err = result.exit_code, result.stderr
    assert code == 2, (code, err, result.stdout)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("option", "suffix"), [("-o", ".json"), ("--plot", ".html")])
@pytest.mark.parametrize("via_symlink", [False, True])
def test_output_onto_a_non_regular_file_is_refused(
    tmp_path: Path, option: str, suffix: str, via_symlink: bool
) -> None:
    """A FIFO stands for /dev/full: renaming a new file over it would replace the node."""
    fifo = tmp_path / f"node{suffix}"
    os.mkfifo(fifo)
    target = fifo
    if via_symlink:
        target = tmp_path / f"link{suffix}"
        target.symlink_to(fifo)
    result = runner.invoke(app, [*ANALYZE, "-p", "The capital of France is", option, str(target)])
    line = _one_line_error(result)
    assert "not a regular file" in line
    assert stat.S_ISFIFO(target.stat().st_mode)  # still the FIFO, not replaced by a file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({fifo.name, target.name})


def test_output_onto_a_regular_file_and_a_symlink_to_one_still_works(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    for target in (real, link):
        result = runner.invoke(app, [*ANALYZE, "-p", "The capital of", "-o", str(target)])
        assert result.exit_code == 0, result.stderr
        assert target.read_text().startswith("{")


@pytest.mark.parametrize("kind", ["fifo", "symlink_to_fifo", "directory", "too_large"])
def test_prompts_file_is_read_only_as_a_regular_file_within_a_cap(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--prompts-file /dev/zero`` was read without end; a FIFO stands in for the device."""
    from lazarus_cli import inputs

    target = tmp_path / "prompts.txt"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink_to_fifo":
        os.mkfifo(tmp_path / "node")
        target.symlink_to(tmp_path / "node")
    elif kind == "directory":
        target.mkdir()
    else:
        monkeypatch.setattr(inputs, "MAX_PROMPTS_FILE_BYTES", 1000)
        target.write_text("The capital of France is\n" * 100)
    result = runner.invoke(app, [*ANALYZE, "--prompts-file", str(target)])
    line = _one_line_error(result)
    assert "prompts.txt" in line
    if kind == "too_large":
        assert "larger than 1,000 bytes" in line
    else:
        assert "regular file" in line or "directory" in line.lower()


@pytest.mark.parametrize("option", ["-p", "-t", "-m"])
def test_an_argument_that_is_not_utf8_is_a_one_line_error(option: str) -> None:
    """Bytes from the shell that are not UTF-8 ended in the tokenizer's TypeError traceback."""
    args = {"-p": "The capital of", "-t": " Paris", "-m": "demo"}
    args[option] = b"The capital \xff of"  # type: ignore[assignment]
    command = [sys.executable, "-m", "lazarus_cli.main", "introspect", "analyze", "--raw"]
    for name, value in args.items():
        command += [name, value]
    done = subprocess.run(command, capture_output=True, timeout=120)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, err
    assert err.strip().splitlines() == [
        "error: an argument is not UTF-8 text (byte 0xff): 'The capital \\xff of'"
    ]


def test_one_capped_read_serves_prompts_files_and_checkpoints(tmp_path: Path) -> None:
    """``--prompts-file`` and a checkpoint's files are read by the one ``read_capped``
    (``modeling/safe_files.py``); only the error class and the file's name differ."""
    from lazarus_cli import inputs
    from lazarus_mcp.errors import ModelLoadError
    from lazarus_mcp.modeling.safe_files import read_capped

    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)
    with pytest.raises(inputs.PromptsFileError) as from_cli:
        inputs.read_prompts_file(fifo)
    with pytest.raises(ModelLoadError) as from_checkpoint:
        read_capped(fifo, 10)
    assert str(from_cli.value) == f"the prompts file {fifo} is not a regular file; refused"
    assert (
        str(from_checkpoint.value) == "prompts.txt in the checkpoint is not a regular file; refused"
    )
    big = tmp_path / "big.txt"
    big.write_text("x" * 11)
    assert read_capped(big, 11) == b"x" * 11
    with pytest.raises(
        inputs.PromptsFileError, match=r"^the prompts file .* larger than 10 bytes$"
    ):
        read_capped(big, 10, inputs.PromptsFileError, f"the prompts file {big}")
