"""The CLI, in-process (Typer's runner) and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lazarus_cli.main import app
from tests.conftest import PARITY, console_script

LLAMA = str(PARITY / "llama")
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["introspect", *args])
    return result.exit_code, result.stdout, result.stderr


def test_text_output_layout() -> None:
    code, out, _ = _run(
        "analyze",
        "-m",
        str(PARITY / "gemma2"),
        "-p",
        "The capital of France is",
        "--raw",
        "-t",
        " is",
        "-t",
        "Parisian",
    )
    assert code == 0
    assert out.startswith(f"Model: {PARITY / 'gemma2'}\n  Family: gemma2\n  Layers: 6\n")
    for line in (
        "  Embedding scale: 8.0000",
        "  Final logit soft-cap: 30",
        "Captured layers: [0, 4, 5]",
        "Tokens (6): ['<s>', 'The', ' capital', ' of', ' France', ' is']",
        "=== Final Prediction ===",
        "=== Logit Lens (top prediction at each layer) ===",
        "=== Token Evolution ===",
        "Token ' is':",
    ):
        assert line in out
    assert "tracking its first, 'Par'" in out
    assert "  Layer  0: " in out


def test_json_and_output_file_are_the_same_result(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    code, out, _ = _run(
        "analyze",
        "-m",
        LLAMA,
        "-p",
        "Hello world",
        "--layers",
        "0,-1",
        "--top-k",
        "3",
        "-o",
        str(target),
        "--json",
    )
    assert code == 0
    printed = json.loads(out)
    assert json.loads(target.read_text()) == printed
    assert printed["captured_layers"] == [0, 5]
    assert printed["config"]["layer_strategy"] == "custom"
    assert printed["chat_template_applied"] is True
    assert all(len(layer["top_k"]) == 3 for layer in printed["layer_predictions"])


def test_strategy_options() -> None:
    def layers(*args: str) -> list[int]:
        code, out, err = _run("analyze", "-m", LLAMA, "-p", "hi", "--json", *args)
        assert code == 0, err
        return json.loads(out)["captured_layers"]

    assert layers() == [0, 4, 5]
    assert layers("-s", "2") == [0, 2, 4, 5]
    assert layers("--all-layers") == [0, 1, 2, 3, 4, 5]
    assert layers("--layer-strategy", "first_last") == [0, 5]
    assert layers("--layer-strategy", "custom", "--custom-layers", "1,-2") == [1, 4]
    assert layers("--all-layers", "--layer-strategy", "first_last") == list(range(6))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "/does/not/exist", "-p", "x"], "not found"),
        (["-m", LLAMA, "-p", ""], "invalid prompt: String should have at least 1 character"),
        (["-m", LLAMA, "-p", "x", "--top-k", "0"], "top_k"),
        # The same cap as the MCP tool's (runtime/limits.py), which --max-top-k raises.
        (["-m", LLAMA, "-p", "x", "--top-k", "100000"], "from 1 to 100 (--max-top-k)"),
        (["-m", LLAMA, "-p", "x", "--top-k", "1000", "--max-top-k", "10000"], "between 1 and 431"),
        (["-m", LLAMA, "-p", "x", "--layers", "0,6"], "out of range"),
        (["-m", LLAMA, "-p", "x", "--layers", "a,b"], "comma-separated integers"),
        (["-m", LLAMA, "-p", "x", "--layer-strategy", "custom"], "requires --layers"),
        (["-m", LLAMA, "-p", "x", "-t", ""], "empty token"),
        (["-m", LLAMA, "-p", "x", "--embedding-scale", "-1"], "embedding_scale"),
        (["-m", LLAMA, "-p", "x", "-o", "/nonexistent-dir/out.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = _run("analyze", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_failed_run_leaves_no_output_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    code, _, _ = _run("analyze", "-m", LLAMA, "-p", "x", "--layers", "99", "-o", str(target))
    assert code == 2
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    code, _, _ = _run("analyze", "-m", LLAMA, "-p", "x", "-o", str(target))
    assert code == 0
    assert json.loads(target.read_text())["prompt"] == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_info_command() -> None:
    code, out, _ = _run("info", "-m", str(PARITY / "qwen3"), "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["family"], info["num_layers"], info["tied_embeddings"]) == ("qwen3", 6, True)


def test_installed_script_bad_input_and_help() -> None:
    exe = console_script("lazarus")
    proc = subprocess.run(
        [exe, "introspect", "analyze", "-m", "/nope", "-p", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model '/nope' not found")
    assert "Traceback" not in proc.stderr
    helped = subprocess.run(
        [exe, "introspect", "analyze", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0
    for option in (
        "--all-layers",
        "--layer-step",
        "--layer-strategy",
        "--layers",
        "--track",
        "--top-k",
        "--embedding-scale",
        "--raw",
        "--output",
        "--json",
    ):
        assert option in helped.stdout


def test_installed_script_writes_the_same_json_as_in_process(tmp_path: Path) -> None:
    target = tmp_path / "sub.json"
    args = ["analyze", "-m", LLAMA, "-p", "The capital of France is", "-t", " France"]
    proc = subprocess.run(
        [console_script("lazarus"), "introspect", *args, "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    code, out, _ = _run(*args, "--json")
    assert code == 0
    assert json.loads(target.read_text()) == json.loads(out)


def test_attribute_and_compare_commands(tmp_path: Path) -> None:
    target = tmp_path / "attribution.json"
    prompt = "The capital of France is"
    code, out, _ = _run(
        "attribute", "-m", LLAMA, "-p", prompt, "--raw", "-t", " is", "--foil", " the"
    )
    assert code == 0
    assert "Milestones for the final top-1" in out and "minus foil ' the'" in out
    code, out, _ = _run("attribute", "-m", LLAMA, "-p", prompt, "--raw", "-o", str(target))
    data = json.loads(target.read_text())
    assert code == 0 and data["captured_layers"] == list(range(6))
    assert data["targets"][0]["token_id"] == data["final_prediction"][0]["token_id"]
    code, out, _ = _run(
        "compare", "-m", LLAMA, "-p", prompt, "--raw", "--prompt-b", "Hello world", "--json"
    )
    assert code == 0 and json.loads(out)["b"]["prompt"] == "Hello world"
    code, _, err = _run("compare", "-m", LLAMA, "-p", prompt)
    assert code == 2 and "exactly one of prompt_b" in err
    code, _, err = _run("compare", "-m", LLAMA, "-p", prompt, "--model-b", "demo")
    assert code == 2 and "do not share a vocabulary" in err and "Traceback" not in err
