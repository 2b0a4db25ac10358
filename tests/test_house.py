"""The house rules of issue 8, each a test that failed on the code before it was rearranged:
no import side effects, one cache entry per checkpoint however it is spelled, one message for a
custom strategy without layers in every interface, one version, and each model on its own device.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mlx.core as mx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.modeling.checkpoint import demo_path
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.schema import CUSTOM_NEEDS_LAYERS, AnalysisConfig, LayerStrategy
from tests.conftest import PARITY, ROOT

LINUX_X86 = sys.platform == "linux" and os.uname().machine == "x86_64"


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


# Defect 4: importing the package for its types sets nothing up -------------------------------

_IMPORT_PROBE = """
import json, os, sys
import lazarus_mcp, lazarus_mcp.introspection, lazarus_mcp.schema, lazarus_mcp.errors
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
print(json.dumps({
    "mlx": "mlx.core" in sys.modules,
    "mkl": "libmkl" in maps,
    "env": sorted(k for k in ("OMP_WAIT_POLICY", "TRANSFORMERS_VERBOSITY",
                              "TRANSFORMERS_NO_ADVISORY_WARNINGS") if k in os.environ),
}))
"""


def test_importing_the_api_has_no_side_effects() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "TRANSFORMERS_"))}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"mlx": False, "mkl": False, "env": []}


@pytest.mark.skipif(
    not LINUX_X86 or "LAZARUS_BLAS" in os.environ, reason="the MKL preload is x86-64 Linux's"
)
def test_the_first_load_sets_the_process_up() -> None:
    code = """
import anyio, json
from lazarus_mcp.introspection import ModelAnalyzer
async def main():
    analyzer = await ModelAnalyzer.from_pretrained("demo")
    return analyzer.info.family
family = anyio.run(main)
maps = open("/proc/self/maps").read()
print(json.dumps({"family": family, "mkl": "libmkl_rt" in maps}))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"family": "llama", "mkl": True}


# Defect 5: the cache is keyed by the resolved checkpoint ---------------------------------------


@pytest.mark.anyio
async def test_one_checkpoint_spelled_three_ways_loads_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = ModelCache(max_models=4)
    monkeypatch.chdir(demo_path().parent)
    spellings = ["demo", str(demo_path()), "demo/", os.path.join(".", "demo")]
    loaded = [await cache.get(name) for name in spellings]
    assert cache.loads == 1
    assert len(cache.loaded()) == 1
    # Each caller sees the model under the name it asked for, over the one loaded model.
    assert [m.info.model_id for m in loaded] == spellings
    assert len({id(m.model) for m in loaded}) == 1
    assert cache.peek(str(demo_path())) is not None
    assert cache.peek("demo").info.model_id == "demo"  # type: ignore[union-attr]


def test_a_hub_id_and_its_snapshot_share_one_load(tmp_path: Path) -> None:
    from tests.test_loading import _fake_hub_cache

    # huggingface_hub reads its cache location at import: a fresh process.
    hub = _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-llama", PARITY / "llama")
    snapshot = hub / "models--tiny-org--tiny-llama" / "snapshots" / ("0" * 40)
    code = f"""
import anyio, json
from lazarus_mcp.runtime.cache import ModelCache
async def main():
    cache = ModelCache()
    by_id = await cache.get("tiny-org/tiny-llama")
    by_path = await cache.get({str(snapshot)!r})
    return [cache.loads, by_id.model is by_path.model, by_id.info.path, by_id.info.model_id]
print(json.dumps(anyio.run(main)))
"""
    proc = _python(code, env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == [1, True, str(snapshot.resolve()), "tiny-org/tiny-llama"]


@pytest.mark.anyio
async def test_other_options_are_another_entry() -> None:
    cache = ModelCache(max_models=4)
    await cache.get("demo", LoadOptions(dtype="float32"))
    await cache.get(str(demo_path()), LoadOptions(dtype="float16"))
    assert cache.loads == 2


# Defect 6: one validation, one message, every interface ----------------------------------------


def test_custom_without_layers_says_the_same_everywhere() -> None:
    with pytest.raises(ValidationError) as api:
        AnalysisConfig(layer_strategy=LayerStrategy.CUSTOM)
    assert CUSTOM_NEEDS_LAYERS in str(api.value)

    cli = CliRunner().invoke(
        app, ["introspect", "analyze", "-m", "demo", "-p", "x", "--layer-strategy", "custom"]
    )
    assert cli.exit_code == 2
    assert CUSTOM_NEEDS_LAYERS in cli.output

    from lazarus_mcp.tools.lens import AnalyzeInput

    mcp_input = AnalyzeInput(model="demo", prompt="x", layer_strategy=LayerStrategy.CUSTOM)
    with pytest.raises(ValidationError) as mcp:
        mcp_input.config()
    assert CUSTOM_NEEDS_LAYERS in str(mcp.value)


def test_the_message_is_written_once() -> None:
    sources = [*(ROOT / "lazarus_mcp").rglob("*.py"), *(ROOT / "lazarus_cli").rglob("*.py")]
    writers = [
        p
        for p in sources
        if "needs layers" in p.read_text() or "requires --layers" in p.read_text()
    ]
    assert [p.relative_to(ROOT).as_posix() for p in writers] == ["lazarus_mcp/schema/analysis.py"]


# Defect 7: one version, from the package metadata ----------------------------------------------


def test_one_version_from_the_metadata() -> None:
    import lazarus_mcp
    from lazarus_mcp.server.app import server_version

    assert lazarus_mcp.__version__ == version("lazarus-mcp") == server_version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert declared is not None and declared.group(1) == version("lazarus-mcp")
    literal = re.compile(rf"['\"]{re.escape(declared.group(1))}['\"]")
    sources = [*(ROOT / "lazarus_mcp").rglob("*.py"), *(ROOT / "lazarus_cli").rglob("*.py")]
    assert [p.name for p in sources if literal.search(p.read_text())] == []


# Defect 3: each model runs on its own device, not the process default ------------------------


def _gpu() -> bool:
    return any(
        getattr(mx, name, None) is not None and getattr(mx, name).is_available()
        for name in ("metal", "cuda")
    )


def test_loading_leaves_the_default_device_alone() -> None:
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.runtime import worker

    def load_and_report() -> tuple[str, str, str]:
        before = str(mx.default_device())
        loaded = load("demo", LoadOptions(device="cpu"))
        return before, str(mx.default_device()), loaded.info.device

    before, after, device = worker.run_sync(load_and_report)
    assert after == before
    assert device == "cpu"


@pytest.mark.skipif(not _gpu(), reason="two devices need a GPU (Metal or CUDA)")
def test_two_models_on_two_devices_each_run_on_their_own() -> None:
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.runtime import worker

    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=3)

    def run() -> tuple[list[float], list[float], str]:
        on_cpu = load("demo", LoadOptions(device="cpu", dtype="float32"))
        on_gpu = load("demo", LoadOptions(device="gpu", dtype="float32"))
        default = str(mx.default_device())
        # The CPU model after the GPU load: it must still run on the CPU, and agree.
        a = analyze_loaded(on_cpu, "The capital of France is", config)
        b = analyze_loaded(on_gpu, "The capital of France is", config)
        return (
            [p.top_probability for p in a.layer_predictions],
            [p.top_probability for p in b.layer_predictions],
            default,
        )

    cpu_probs, gpu_probs, default = worker.run_sync(run)
    assert default == str(worker.run_sync(mx.default_device))
    assert cpu_probs == pytest.approx(gpu_probs, abs=1e-4)


# Defect 11: tests that need no checkpoint run without ../shared/parity --------------------------


def test_the_suite_runs_without_the_parity_checkpoints(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["LAZARUS_PARITY_DIR"] = str(tmp_path / "absent")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_stats.py", "tests/test_layers.py", "tests/test_cache.py"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ skipped", summary), summary
