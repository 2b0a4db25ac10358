"""The CLI's grid, batches and pictures (in-process, Typer's runner, real checkpoints)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from lazarus_cli.inputs import numbered, read_prompts_file
from lazarus_cli.main import app
from tests.conftest import PARITY

LLAMA = str(PARITY / "llama")
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["introspect", "analyze", "-m", LLAMA, *args])
    return result.exit_code, result.stdout, result.stderr


def test_batch_is_json_lines_in_input_order(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "line one\nline two", "id": 7}) + "\n\n" + '{"prompt": "Hi"}\n'
    )
    out_file = tmp_path / "results.jsonl"
    code, out, err = _run(
        "-p",
        "The capital of France is",
        "--prompts-file",
        str(prompts),
        "--raw",
        "--json",
        "-o",
        str(out_file),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == [
        "The capital of France is",
        "line one\nline two",
        "Hi",
    ]
    assert out_file.read_text().splitlines() == lines
    # Each equals the single-prompt run of the same prompt (within float rounding).
    code, alone, _ = _run("-p", "Hi", "--raw", "--json")
    ours, single = json.loads(lines[2]), json.loads(alone)
    assert ours["token_ids"] == single["token_ids"]
    assert [p["top_token_id"] for p in ours["layer_predictions"]] == [
        p["top_token_id"] for p in single["layer_predictions"]
    ]


def test_text_prompts_file_and_numbered_plots(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The capital of France is\n\n2 + 2 =\n")
    assert read_prompts_file(prompts) == ["The capital of France is", "2 + 2 ="]
    code, out, err = _run(
        "--prompts-file",
        str(prompts),
        "--raw",
        "--positions",
        "all",
        "--include-embeddings",
        "--plot",
        str(tmp_path / "grid.svg"),
        "-t",
        " the",
        "--plot-tracks",
        str(tmp_path / "tracks.png"),
    )
    assert code == 0, err
    assert "##### Prompt 2 of 2 #####" in out
    assert "=== Grid (top prediction per layer and position" in out
    assert "  Layer emb: " in out
    for name in ("grid-1.svg", "grid-2.svg", "tracks-1.png", "tracks-2.png"):
        assert f"Wrote {tmp_path / name}" in out
    svg = (tmp_path / "grid-1.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "\u2423capital" in svg  # visible space
    assert (tmp_path / "tracks-2.png").read_bytes().startswith(b"\x89PNG")
    assert numbered(Path("a/b.png"), 0, 1) == Path("a/b.png")


def test_html_page_is_self_contained(tmp_path: Path) -> None:
    page_path = tmp_path / "grid.html"
    code, _, err = _run(
        "-p",
        "The capital of France is",
        "--raw",
        "--positions",
        "0,-1",
        "-t",
        " Paris",
        "--plot",
        str(page_path),
        "--plot-metric",
        "rank",
    )
    assert code == 0, err
    page = page_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # Nothing that would make a request: no src/href, no CSS url() or @import, no fetch.
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|fetch\(|XMLHttpRequest", page)
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert data["positions"] == [0, 5]
    assert data["cells"][0][1]["tracked"][0][0] == "\u2423Paris"
    assert "rank of \u2423Paris" in page


def test_bad_plot_requests_fail_in_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["--plot", str(tmp_path / "x.txt")], "must end in .png, .svg or .html"),
        (["--plot", str(tmp_path / "x.png"), "--plot-metric", "rank"], "needs a tracked token"),
        (["--plot-tracks", str(tmp_path / "t.png")], "needs tokens to track"),
        (["--positions", "first"], "comma-separated integers"),
        (["--positions", "7"], "position 7 is out of range"),
    ):
        code, out, err = _run("-p", "Hi", "--raw", *args)
        assert code == 2, (args, out)
        assert message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = _run()
    assert code == 2 and "give a prompt" in err


def test_progress_line_only_on_a_terminal() -> None:
    import io

    import anyio

    from lazarus_cli.progress import TerminalProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    async def job() -> str:
        await anyio.sleep(0.3)
        return "done"

    async def run(stream: io.StringIO) -> str:
        bar = TerminalProgress(stream)
        value = await bar.wait("loading demo", job())
        await bar.update(1, 2)
        await bar.update(2, 2)
        return value

    tty, pipe = Terminal(), io.StringIO()
    assert anyio.run(run, tty) == anyio.run(run, pipe) == "done"
    assert "loading demo" in tty.getvalue() and "[" + "#" * 14 in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")  # the line is erased when done
    assert pipe.getvalue() == ""
