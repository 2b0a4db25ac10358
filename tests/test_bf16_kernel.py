"""lazarus's bfloat16 CPU GEMM: exact against a float64 reference, and models run through it keep
the lens's invariants and the parity references."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file

from lazarus_mcp.accel import bf16_linear, cpu_gemm
from lazarus_mcp.accel.bf16_linear import EXACT, FAST
from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.modeling.loading import LoadedModel, LoadOptions, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint
from tests.conftest import PARITY, PARITY_MODELS, parity_ref
from tests.parity_check import assert_matches_reference
from tests.test_lens import _last_block_check

pytestmark = pytest.mark.skipif(
    not cpu_gemm.status().available,
    reason=f"bfloat16 kernel unavailable: {cpu_gemm.status().reason}",
)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _widen(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _matmul(
    x: np.ndarray, w_bits: np.ndarray, bias: np.ndarray | None, parts: int = 1
) -> np.ndarray:
    def run() -> np.ndarray:
        weight = mx.array(w_bits).view(mx.bfloat16)
        packed = cpu_gemm.pack_bf16(weight)
        b = mx.array(bias) if bias is not None else None
        y = cpu_gemm.bf16_matmul(mx.array(x), packed, b, parts)
        return np.array(y)

    return worker.run_sync(run)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("m", [1, 5, 14, 15, 29, 230])
@pytest.mark.parametrize(("k", "n"), [(1, 1), (2, 31), (3, 32), (33, 33), (64, 70), (301, 129)])
def test_gemm_equals_float64_reference(m: int, k: int, n: int, parts: int) -> None:
    """Every row, tail column and odd input against float64: one part is the product of the
    bfloat16-rounded input, two parts that of the float32 input itself (to about 2^-16)."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x = rng.standard_normal((m, k)).astype(np.float32) * 3
    w_bits = _bf16_bits(rng.standard_normal((n, k)).astype(np.float32) / np.sqrt(k))
    bias = rng.standard_normal(n).astype(np.float32) if n % 2 else None
    got = _matmul(x, w_bits, bias, parts)
    x_used = _widen(_bf16_bits(x)) if parts == 1 else x
    ref = x_used.astype(np.float64) @ _widen(w_bits).astype(np.float64).T
    if bias is not None:
        ref += bias
    assert got.shape == (m, n)
    magnitude = np.abs(x).astype(np.float64) @ np.abs(_widen(w_bits)).T + 1
    tolerance = 1e-6 if parts == 1 else 2**-15
    assert np.all(np.abs(got - ref) <= tolerance * magnitude)
    if parts == 2:  # and far closer than rounding the input would be
        rounded = _widen(_bf16_bits(x)).astype(np.float64) @ _widen(w_bits).astype(np.float64).T
        assert (
            np.abs(got - ref).max()
            < np.abs(rounded + (bias if bias is not None else 0) - ref).max() / 50
        )


def test_inputs_are_rounded_to_nearest_even() -> None:
    # 1 + 2^-8 lies halfway between two bfloat16 values: it rounds to the even one (1.0);
    # 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
    x = np.array([[1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-9]], dtype=np.float32)
    eye = _bf16_bits(np.eye(3, dtype=np.float32))
    assert _matmul(x, eye, None).tolist() == [[1.0, 1 + 2**-6, 1.0]]


def test_batched_and_strided_inputs() -> None:
    rng = np.random.default_rng(7)
    w_bits = _bf16_bits(rng.standard_normal((40, 24)).astype(np.float32))
    x = rng.standard_normal((2, 3, 24)).astype(np.float32)

    def run() -> tuple[np.ndarray, np.ndarray]:
        packed = cpu_gemm.pack_bf16(mx.array(w_bits).view(mx.bfloat16))
        batched = cpu_gemm.bf16_matmul(mx.array(x), packed, None, 2)
        strided = mx.array(x.reshape(6, 24).T.copy()).T  # a transposed view
        flat = cpu_gemm.bf16_matmul(strided, packed, None, 2)
        return np.array(batched), np.array(flat)

    batched, flat = worker.run_sync(run)
    assert batched.shape == (2, 3, 40)
    np.testing.assert_array_equal(batched.reshape(6, 40), flat)

    def empty() -> tuple[int, ...]:
        packed = cpu_gemm.pack_bf16(mx.array(w_bits).view(mx.bfloat16))
        return tuple(cpu_gemm.bf16_matmul(mx.zeros((1, 0, 24)), packed, None, 2).shape)

    assert worker.run_sync(empty) == (1, 0, 40)


def test_rows_do_not_depend_on_the_other_rows() -> None:
    """A row's result is the same alone or in any block of rows: the lens of block N-1 and the
    model's own output (one row vs the whole sequence) are then bit for bit equal."""
    rng = np.random.default_rng(3)
    w_bits = _bf16_bits(rng.standard_normal((96, 200)).astype(np.float32))
    x = rng.standard_normal((31, 200)).astype(np.float32)
    for parts in (1, 2):
        whole = _matmul(x, w_bits, None, parts)
        for row in (0, 13, 14, 30):
            alone = _matmul(x[row : row + 1], w_bits, None, parts)[0]
            np.testing.assert_array_equal(alone, whole[row])


def _bf16_checkpoint(directory: Path, family: str) -> Path:
    path = build_checkpoint(directory, family)
    weights = load_file(str(path / "model.safetensors"))
    as_bf16 = {
        name: mx.array(_bf16_bits(value)).view(mx.bfloat16) for name, value in weights.items()
    }
    mx.save_safetensors(str(path / "model.safetensors"), as_bf16)
    return path


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize(("dtype", "matmul"), [("auto", EXACT), ("bfloat16", FAST)])
def test_bfloat16_checkpoint_runs_through_the_kernel(
    tmp_path: Path, family: str, dtype: str, matmul: str
) -> None:
    """On the CPU a bfloat16 checkpoint runs through the kernel (float32-accurate inputs with
    ``auto``, bfloat16 inputs with ``--dtype bfloat16``); either way the lens of block N-1 is the
    model's own output and the taps change nothing. With ``auto`` the lens is the float32 lens
    of the same weights within the references' 2e-3."""
    path = _bf16_checkpoint(tmp_path / family, family)
    loaded = worker.run_sync(load, str(path), LoadOptions(dtype=dtype))
    info = loaded.info
    assert (info.dtype, info.matmul, info.weight_dtype) == ("bfloat16", matmul, "bfloat16")
    assert info.compute_dtype == "float32"
    head_diff, tap_diff = worker.run_sync(_last_block_check, loaded)
    assert head_diff <= 1e-6
    assert tap_diff <= 1e-5
    if matmul == FAST:
        return

    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, track_tokens=[" Paris"])
    kernel = worker.run_sync(analyze_loaded, loaded, "The capital of France is", config)
    reference = worker.run_sync(load, str(path), LoadOptions(dtype="float32"))
    assert reference.info.matmul == "mlx"
    # The packed weights are counted (the cache's memory budget), and are half float32's.
    assert 0 < bf16_linear.packed_bytes(loaded.model) < loaded.nbytes < reference.nbytes
    exact = worker.run_sync(analyze_loaded, reference, "The capital of France is", config)
    for got, want in zip(kernel.layer_predictions, exact.layer_predictions, strict=True):
        assert abs(got.top_probability - want.top_probability) < 2e-3
        assert abs(got.entropy - want.entropy) < 1e-2
    evolution = kernel.token_evolutions[0]
    for got, want in zip(evolution.layers, exact.token_evolutions[0].layers, strict=True):
        assert abs(got.probability - want.probability) < 2e-3


def _float32_reference(loaded: LoadedModel, token_ids: list[int], tokens: list[str]) -> dict:
    """A parity-style case: every block's full log-distribution, computed in float32."""
    layers = list(range(loaded.info.num_layers))
    captured, _ = forward_with_taps(loaded.model, token_ids, layers)
    logits = loaded.head(mx.stack([captured[i] for i in layers]))
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    return {
        "input_ids": token_ids,
        "tokens": tokens,
        "layers": [{"layer_idx": i, "logprobs": logprobs[i].tolist()} for i in layers],
    }


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_parity_models_in_bfloat16_match_float32_within_tolerance(
    tmp_path: Path, name: str
) -> None:
    """Each parity model, stored in bfloat16 and run through the kernel (what ``auto`` does with
    a bfloat16 checkpoint), against the float32 lens of the same weights (the path the PyTorch
    references verify): every case, every block, within the references' 2e-3."""
    path = Path(shutil.copytree(PARITY / name, tmp_path / name))
    weights = mx.load(str(path / "model.safetensors"))
    mx.save_safetensors(
        str(path / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()}
    )
    kernel = worker.run_sync(load, str(path), LoadOptions())
    exact = worker.run_sync(load, str(path), LoadOptions(dtype="float32"))
    assert (kernel.info.matmul, exact.info.matmul) == (EXACT, "mlx")
    for case in parity_ref(name)["cases"]:
        config = AnalysisConfig(
            layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not case["raw"]
        )
        result = worker.run_sync(analyze_loaded, kernel, case["prompt"], config)
        reference = worker.run_sync(_float32_reference, exact, result.token_ids, result.tokens)
        assert_matches_reference(result.model_dump(mode="json"), reference)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize(
    ("m", "k", "n", "group_size"),
    [(1, 64, 32, 32), (7, 256, 70, 64), (13, 384, 33, 128), (200, 64, 40, 32)],
)
def test_affine_gemm_equals_float64_reference(
    m: int, k: int, n: int, group_size: int, bits: int
) -> None:
    """The affine kernel computes x @ (scale * q + bias)^T without rounding scale * q + bias:
    float32-accurate against float64, for every row block, tail column and group."""
    rng = np.random.default_rng(bits * 100 + m)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)

    def run() -> tuple[np.ndarray, np.ndarray]:
        q, scales, biases = mx.quantize(mx.array(w).astype(mx.bfloat16), group_size, bits)
        packed = cpu_gemm.pack_affine(q, scales, biases, group_size, bits)
        y = cpu_gemm.affine_matmul(mx.array(x), packed, mx.array(bias))
        # The exact weights: float32 scale * q + bias, widened to float64 before the product.
        codes = mx.dequantize(q, mx.ones_like(scales), mx.zeros_like(biases), group_size, bits)
        s = np.repeat(np.array(scales.astype(mx.float32)), group_size, axis=1).astype(np.float64)
        b = np.repeat(np.array(biases.astype(mx.float32)), group_size, axis=1).astype(np.float64)
        exact = s * np.array(codes.astype(mx.float32)).astype(np.float64) + b
        return np.array(y), exact

    got, exact = worker.run_sync(run)
    ref = x.astype(np.float64) @ exact.T + bias
    magnitude = np.abs(x).astype(np.float64) @ np.abs(exact).T + 1
    assert np.all(np.abs(got - ref) <= 2**-15 * magnitude)


def test_quantized_checkpoint_runs_through_the_affine_kernel(tmp_path: Path) -> None:
    """A 4-bit checkpoint: ``auto`` runs the affine kernel, float32-accurate (its lens matches
    the float32 dequantization's within 2e-3), the lens of block N-1 is the model's own output
    and the taps change nothing; ``--dtype bfloat16`` runs the bfloat16 kernel on exactly what
    MLX's own dequantization computes."""
    from mlx_lm import convert

    source = _bf16_checkpoint(tmp_path / "qwen3", "qwen3")  # tied embeddings
    out = tmp_path / "qwen3-4bit"
    worker.run_sync(lambda: convert(str(source), str(out), quantize=True, q_bits=4))
    auto = worker.run_sync(load, str(out), LoadOptions())
    assert auto.info.tied_embeddings
    assert (auto.info.matmul, auto.info.weight_dtype) == (
        EXACT,
        "4-bit affine (scales and biases in float32)",
    )
    exact = worker.run_sync(load, str(out), LoadOptions(dtype="float32"))
    assert exact.info.matmul == "mlx"
    assert 0 < bf16_linear.packed_bytes(auto.model) < auto.nbytes < exact.nbytes
    assert isinstance(auto.model.layers[0].mlp.down_proj, bf16_linear.AffineLinear)
    assert isinstance(auto.model.model.embed_tokens, bf16_linear.AffineEmbedding)
    fast = worker.run_sync(load, str(out), LoadOptions(dtype="bfloat16"))
    assert fast.info.matmul == FAST
    for model in (auto, fast):
        head_diff, tap_diff = worker.run_sync(_last_block_check, model)
        assert head_diff <= 1e-6
        assert tap_diff <= 1e-5

    prompt = "The capital of France is"
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=10)
    result = worker.run_sync(analyze_loaded, auto, prompt, config)
    reference = worker.run_sync(_float32_reference, exact, result.token_ids, result.tokens)
    assert assert_matches_reference(result.model_dump(mode="json"), reference) < 2e-4

    native = worker.run_sync(load, str(out), LoadOptions(dtype="native"))

    def weights() -> tuple[np.ndarray, np.ndarray]:
        q = native.model.layers[0].mlp.down_proj
        deq = mx.dequantize(q.weight, q.scales, q.biases, q.group_size, q.bits)
        packed = fast.model.layers[0].mlp.down_proj.packed
        eye = mx.eye(deq.shape[1])
        via_kernel = cpu_gemm.bf16_matmul(eye, packed, None, 1).T
        return np.array(deq.astype(mx.float32)), np.array(via_kernel)

    deq, via_kernel = worker.run_sync(weights)
    np.testing.assert_array_equal(deq, via_kernel)


def test_kernel_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _bf16_checkpoint(tmp_path / "llama", "llama")
    monkeypatch.setenv("LAZARUS_CPU_KERNEL", "off")
    cpu_gemm._library.cache_clear()
    try:
        assert cpu_gemm.status() == cpu_gemm.KernelStatus(False, "disabled by LAZARUS_CPU_KERNEL")
        info = worker.run_sync(load, str(path), LoadOptions()).info
        assert (info.matmul, info.weight_dtype, info.compute_dtype) == ("mlx", "float32", "float32")
    finally:
        monkeypatch.delenv("LAZARUS_CPU_KERNEL")
        cpu_gemm._library.cache_clear()


_FORK_SCRIPT = """
import os, sys
import numpy as np
from lazarus_mcp.accel import cpu_gemm
lib = cpu_gemm._lib()
rng = np.random.default_rng(0)
w = rng.integers(0, 2**14, (256, 64)).astype(np.uint16)
packed = np.empty(lib.lz_packed_elems(256, 64), np.uint16)
lib.lz_pack(w.ctypes.data, 256, 64, packed.ctypes.data, 2)
x = rng.standard_normal((64, 64)).astype(np.float32)
def gemm():
    y = np.empty((64, 256), np.float32)
    rc = lib.lz_gemm(x.ctypes.data, 64, 64, packed.ctypes.data, 256, None, y.ctypes.data, 2, 2)
    assert rc == 0
    return y
before = gemm()  # starts the helper threads
pid = os.fork()
if pid == 0:  # the child has no helpers: it must start its own, not wait for the parent's
    os._exit(0 if np.array_equal(gemm(), before) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or (0 if np.array_equal(gemm(), before) else 2))
"""


def test_helper_threads_survive_fork() -> None:
    """The kernels keep helper threads; a forked child (which has none) still computes."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_quantizations_the_affine_kernel_does_not_compute_stay_float32(tmp_path: Path) -> None:
    """3-bit codes cross 32-bit words, which the affine kernel does not unpack: such a
    checkpoint is dequantized to float32 under ``auto``, and says so."""
    from mlx_lm import convert

    source = _bf16_checkpoint(tmp_path / "llama", "llama")
    out = tmp_path / "llama-3bit"
    worker.run_sync(lambda: convert(str(source), str(out), quantize=True, q_bits=3))
    loaded = worker.run_sync(load, str(out), LoadOptions())
    assert loaded.info.quantization is not None and loaded.info.quantization.bits == 3
    assert (loaded.info.matmul, loaded.info.weight_dtype) == ("mlx", "float32")
    head_diff, tap_diff = worker.run_sync(_last_block_check, loaded)
    assert head_diff <= 1e-5
    assert tap_diff <= 1e-5
