"""``lazarus introspect generate`` in-process (Typer's runner): the same JSON as the API, the
timeline, the picture, and one-line refusals with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema.generation import GenerationConfig
from tests.conftest import PARITY

GEMMA2 = str(PARITY / "gemma2")  # sliding windows: the test prompts run past them
PROMPT = "The capital of France is Paris . The capital of Japan is"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["introspect", "generate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_file_and_stdout_agree_with_the_api(tmp_path: Path) -> None:
    out = tmp_path / "gen.json"
    args = ["-m", GEMMA2, "-p", PROMPT, "--raw", "-n", "6", "-t", " Tokyo", "--all-layers"]
    code, stdout, err = _run(*args, "-o", str(out), "--json")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert json.loads(stdout) == data
    assert data["config"]["max_new_tokens"] == 6 and data["seed"] == 0
    assert len(data["steps"]) == len(data["generated_token_ids"]) <= 6

    async def api() -> dict[str, object]:
        analyzer = await ModelAnalyzer.from_pretrained(GEMMA2)
        config = GenerationConfig(
            max_new_tokens=6,
            track_tokens=[" Tokyo"],
            layer_strategy="all",
            use_chat_template=False,
        )
        result = await analyzer.generate(PROMPT, config)
        return result.model_dump(mode="json")

    assert anyio.run(api) == data


def test_text_timeline_and_picture(tmp_path: Path) -> None:
    picture = tmp_path / "gen.png"
    code, out, err = _run("-m", GEMMA2, "-p", PROMPT, "--raw", "-n", "5", "--plot", str(picture))
    assert code == 0, err
    assert out.startswith(f"Model: {GEMMA2}\n  Family: gemma2\n")
    assert "Timeline:" in out and "  step  pos  token" in out
    assert f"Wrote {picture}" in out
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-n", "100000"], "max_new_tokens"),
        (["--stop", "y" * 100_000], "stop string"),
        (["--top-k", "262144", "--all-layers"], "top_k"),
        (["--temperature", "-1"], "temperature"),
        (["--plot", "x.html"], ".png or .svg"),
        (["--lens", "tuned"], "lens"),
    ],
)
def test_refusals_are_one_line_with_exit_2(args: list[str], expected: str) -> None:
    code, out, err = _run("-m", GEMMA2, "-p", "x", *args)
    assert code == 2, out
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
