"""Loading: local paths, Hugging Face ids from the local cache, quantized checkpoints, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lazarus_mcp.errors import ModelLoadError, ModelNotFoundError, UnsupportedModelError
from lazarus_mcp.modeling.loading import LoadOptions, load
from lazarus_mcp.runtime import worker
from tests.conftest import PARITY, console_script
from tests.test_lens import _last_block_check


def _load(path: Path | str, **options: str) -> object:
    return worker.run_sync(load, str(path), LoadOptions(**options))


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(PARITY / name, tmp_path / name))


def test_missing_path_and_non_model_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        _load(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        _load(tmp_path / "file.txt")
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        _load(tmp_path)


def test_corrupt_config(tmp_path: Path) -> None:
    path = _copy("llama", tmp_path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match=r"corrupt config\.json"):
        _load(path)
    (path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ModelLoadError, match="no model_type"):
        _load(path)


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = _copy("llama", tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'mamba'"):
        _load(path)


def test_corrupt_and_missing_weights(tmp_path: Path) -> None:
    path = _copy("llama", tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])  # valid header, cut data
    with pytest.raises(ModelLoadError, match="could not"):
        _load(path)
    (path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="could not load"):
        _load(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="could not load"):
        _load(path)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="dtype"):
        LoadOptions(dtype="int3")
    with pytest.raises(ValueError, match="device"):
        LoadOptions(device="tpu")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("q") / "llama-tied-4bit"
    worker.run_sync(lambda: convert(str(PARITY / "llama-tied"), str(out), quantize=True, q_bits=4))
    return out


@pytest.mark.parametrize("dtype", ["native", "auto"])
def test_four_bit_checkpoint(quantized: Path, dtype: str) -> None:
    loaded = _load(quantized, dtype=dtype)
    info = loaded.info
    assert info.quantization is not None
    assert (info.quantization.bits, info.quantization.group_size) == (4, 64)
    assert info.tied_embeddings
    if dtype == "native":
        assert type(loaded.model.model.embed_tokens).__name__ == "QuantizedEmbedding"
    else:
        assert info.compute_dtype == "float32"
    head_diff, tap_diff = worker.run_sync(_last_block_check, loaded)
    assert tap_diff <= 1e-5
    assert head_diff <= 1e-4


def _fake_hub_cache(root: Path, repo: str, source: Path) -> Path:
    """The layout huggingface_hub keeps: models--org--name/{refs/main, snapshots/<commit>/}."""
    commit = "0" * 40
    entry = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, entry / "snapshots" / commit)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    return root


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("lazarus"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_hub_id_from_local_cache_offline(tmp_path: Path) -> None:
    cache = _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-qwen3", PARITY / "qwen3")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = _cli("introspect", "info", "-m", "tiny-org/tiny-qwen3", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["model_id"] == "tiny-org/tiny-qwen3"
    assert info["family"] == "qwen3"
    missing = _cli("introspect", "info", "-m", "tiny-org/not-there", env=env)
    assert missing.returncode == 2
    assert "not in the local Hugging Face cache" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
