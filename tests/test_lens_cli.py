"""``lazarus lens ...`` end to end on the parity llama: fit, train, info, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lazarus_cli.main import app
from tests.conftest import PARITY

runner = CliRunner()
LLAMA = str(PARITY / "llama")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "alpha",
    "beta",
    "gamma",
    "river",
    "mountain",
    "city",
    "light",
]


def _prompts(tmp_path: Path) -> Path:
    lines = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(24)) for i in range(6)]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_train_info(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path)
    out = tmp_path / "j"
    args = ["lens", "fit-jacobian", "-m", LLAMA, "--prompts-file", str(prompts)]
    done = runner.invoke(app, [*args, "--skip-first", "4", "--held-out", "1", "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert "jacobian lens for" in done.output and "held-out KL" in done.output
    info = runner.invoke(app, ["lens", "info", str(out), "--json"])
    config = json.loads(info.output)
    assert config["kind"] == "jacobian" and config["provenance"]["n_prompts"] == 5
    tuned = tmp_path / "t"
    args = ["lens", "train-tuned", "-m", LLAMA, "--self-generated", "4", "--seq-len", "16"]
    done = runner.invoke(app, [*args, "--steps", "3", "--held-out", "1", "-o", str(tuned)])
    assert done.exit_code == 0, done.output
    assert json.loads((tuned / "config.json").read_text())["provenance"]["steps_done"] == 3
    analyze = ["introspect", "analyze", "-m", LLAMA, "-p", "The capital", "--raw", "--json"]
    result = runner.invoke(app, [*analyze, "--lens", str(tuned)])
    assert json.loads(result.output)["lens"]["kind"] == "tuned"
    # The logit lens is named too (its config leaves the default out, as positions').
    logit = json.loads(runner.invoke(app, analyze).output)
    assert logit["lens"] == {"kind": "logit", "path": None, "fit": None}
    assert "lens" not in logit["config"]
    # The commands built from the tool specs take --lens (attribute) and --lens-b (compare).
    prompt = ["-m", LLAMA, "-p", "The capital", "--raw", "--json"]
    attributed = runner.invoke(app, ["introspect", "attribute", *prompt, "--lens", str(out)])
    assert json.loads(attributed.output)["lens"]["kind"] == "jacobian", attributed.output
    compared = runner.invoke(app, ["introspect", "compare", *prompt, "--lens-b", str(tuned)])
    sides = json.loads(compared.output)
    assert sides["a"]["lens"]["kind"] == "logit", compared.output
    assert sides["b"]["lens"]["kind"] == "tuned", compared.output
    two = runner.invoke(app, ["introspect", "compare", *prompt, "--lens-b", "x", "--prompt-b", "y"])
    assert two.exit_code == 2 and "exactly one of" in two.output, two.output


def test_refusals_are_one_line(tmp_path: Path) -> None:
    cases = [
        ["lens", "info", str(tmp_path)],
        ["lens", "train-tuned", "-m", LLAMA, "-o", str(tmp_path / "x")],
        ["lens", "fit-jacobian", "-m", LLAMA, "--prompts-file", "/dev/zero", "-o", "x"],
        ["introspect", "analyze", "-m", LLAMA, "-p", "x", "--lens", str(tmp_path)],
    ]
    for args in cases:
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (args, done.output)
        lines = done.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, done.output)


def test_import_a_jacobian_artifact(tmp_path: Path) -> None:
    import sys

    import pytest

    if sys.modules.get("torch", sys) is None:  # hidden by an earlier command in this process
        del sys.modules["torch"]
    torch = pytest.importorskip("torch")
    artifact = tmp_path / "lens.pt"
    matrices = {0: torch.eye(64, dtype=torch.float16), 2: 0.5 * torch.eye(64)}
    torch.save({"J": matrices, "d_model": 64, "n_prompts": 3}, artifact)
    out = tmp_path / "imported"
    done = runner.invoke(app, ["lens", "import", str(artifact), "-m", LLAMA, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert "maps blocks 0, 2" in done.output
    config = json.loads((out / "config.json").read_text())
    assert config["layers"] == [0, 2] and config["provenance"]["n_prompts"] == 3
    torch.save({"J": {0: torch.eye(32)}, "d_model": 32}, artifact)
    done = runner.invoke(app, ["lens", "import", str(artifact), "-m", LLAMA, "-o", str(out)])
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
