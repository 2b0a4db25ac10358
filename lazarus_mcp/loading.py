"""Find a checkpoint, load it with mlx-lm, and describe it.

Runs on the MLX worker thread (it creates MLX arrays).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lazarus_mcp import bf16_linear, blas, cpu_gemm
from lazarus_mcp.errors import ModelLoadError, ModelNotFoundError
from lazarus_mcp.head import (
    LensHead,
    backbone,
    build_head,
    check_family,
    intended_embedding_scale,
)
from lazarus_mcp.hf_config import mlx_overrides, sliding_windows
from lazarus_mcp.models import ModelInfo, QuantizationInfo
from lazarus_mcp.ports import apply_port_fixes
from lazarus_mcp.tokens import TokenText, has_chat_template

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

logger = logging.getLogger(__name__)

DEMO_MODEL = "demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = [
    "*.json",
    "*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]
DTYPES = ("auto", "native", "float32", "bfloat16", "float16")


def demo_path() -> Path:
    return Path(__file__).parent / "demo"


@dataclass(frozen=True)
class LoadOptions:
    """How to run a model: ``auto`` keeps the checkpoint's dtype on a GPU; on the CPU it runs
    bfloat16 and affine-quantized checkpoints through lazarus's kernels, float32-accurate, where
    the CPU has AVX512-BF16, and everything else in float32 through BLAS. ``bfloat16`` on such
    a CPU uses the kernel with bfloat16 inputs (quantized weights dequantized to bfloat16);
    ``native`` keeps the checkpoint as stored, computed by MLX's own ops (quantized too)."""

    dtype: str = "auto"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.device not in (None, "cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, not {self.device!r}")


@dataclass
class LoadedModel:
    info: ModelInfo
    model: Any
    tokenizer: Any
    head: LensHead
    token_text: TokenText
    applied_embedding_scale: float
    nbytes: int
    sliding_windows: dict[int, int] = field(default_factory=dict)

    def embedding_factor(self, override: float | None) -> float:
        """Factor on the embedding lookup that makes the forward use the wanted scale."""
        wanted = override if override is not None else self.info.embedding_scale
        if wanted is None:
            return 1.0
        return wanted / self.applied_embedding_scale


def _hub_snapshot(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except Exception as cached_exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        if offline:
            raise ModelNotFoundError(
                f"model '{model_id}' is not in the local Hugging Face cache and the hub is "
                "offline (HF_HUB_OFFLINE): download it first or pass a local directory"
            ) from cached_exc
    try:
        return Path(snapshot_download(model_id, allow_patterns=_HUB_FILES))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model '{model_id}' is not cached locally and could not be downloaded from the "
            f"Hugging Face hub ({type(exc).__name__}); check the id or pass a local directory"
        ) from exc


def resolve_model_path(model_id: str) -> Path:
    """A local directory with a config.json for a path, ``demo`` or a Hugging Face id."""
    if not model_id or not model_id.strip():
        raise ModelNotFoundError("no model given: pass a directory, a Hugging Face id or 'demo'")
    if model_id == DEMO_MODEL:
        path = demo_path()
    else:
        path = Path(model_id).expanduser()
        if not path.exists():
            if not _HUB_ID.match(model_id):
                raise ModelNotFoundError(
                    f"model '{model_id}' not found: no such directory, and not a Hugging Face "
                    "id (org/name)"
                )
            path = _hub_snapshot(model_id)
    if not path.is_dir():
        raise ModelNotFoundError(f"'{model_id}' is a file, not a model directory")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"'{model_id}' is not a model directory: it has no config.json")
    return path.resolve()


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"corrupt config.json in {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"config.json in {path} has no model_type")
    return config


def _quantization(config: dict[str, Any]) -> QuantizationInfo | None:
    q = config.get("quantization") or config.get("quantization_config")
    if not isinstance(q, dict) or "bits" not in q:
        return None
    return QuantizationInfo(
        bits=int(q["bits"]), group_size=int(q.get("group_size", 64)), mode=q.get("mode", "affine")
    )


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("mlx.core.")


def _stored_dtype(model: Any) -> str:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    for name, value in tree_flatten(model.parameters()):
        if mx.issubdtype(value.dtype, mx.floating) and not name.endswith(("scales", "biases")):
            return _dtype_name(value.dtype)
    for name, value in tree_flatten(model.parameters()):
        if name.endswith("scales"):
            return _dtype_name(value.dtype)
    return "unknown"


@dataclass(frozen=True)
class ComputePlan:
    """What a load converts to: ``dtype`` for the MLX parameters (``native``: as stored), and
    what runs the linear layers: ``mlx``, or lazarus's CPU kernels (``bf16_linear``)."""

    dtype: str
    matmul: str = "mlx"


def plan_compute(
    options: LoadOptions, device: str, stored: str, quantization: QuantizationInfo | None
) -> ComputePlan:
    kernel = device == "cpu" and cpu_gemm.status().available
    if options.dtype == "auto":
        if device != "cpu":
            return ComputePlan("native")
        # MLX's CPU backend reaches BLAS only for float32 (its bfloat16 and quantized matmuls
        # run ~50-100x slower). Where the CPU has bfloat16 dot products, bfloat16 and quantized
        # weights go through lazarus's kernels, float32-accurate; all else computes in float32.
        if kernel and (
            bf16_linear.affine_kernel_computes(quantization)
            if quantization is not None
            else stored == "bfloat16"
        ):
            return ComputePlan("float32", bf16_linear.EXACT)
        return ComputePlan("float32")
    if options.dtype == "bfloat16" and kernel:
        return ComputePlan("float32", bf16_linear.FAST)
    return ComputePlan(options.dtype)


def _weight_dtype(plan: ComputePlan, compute: str, q: QuantizationInfo | None) -> str:
    if plan.matmul == bf16_linear.EXACT and q is not None:
        return f"{q.bits}-bit {q.mode} (scales and biases in float32)"
    return "bfloat16" if plan.matmul != "mlx" else compute


def _apply_plan(model: Any, plan: ComputePlan, quantized: bool, tied: bool) -> None:
    """Convert a lazily loaded model as planned, one tensor at a time.

    Each weight is read from the file, converted and its source freed before the next, so the
    peak stays near the converted weights' size instead of adding the checkpoint's (a bfloat16
    1B model to float32: 4.4 GB, not 6.6). Quantization scales and biases are converted first,
    so dequantization computes in the target dtype directly, without a bfloat16 round trip.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model

    if plan.dtype == "native":
        return
    if plan.matmul != "mlx":
        if quantized and plan.matmul == bf16_linear.FAST:
            dequantize_model(model)  # lazily, as MLX's dequantize does (in the scales' dtype)
        bf16_linear.pack_model(model, tied, plan.matmul)
    model.set_dtype(getattr(mx, plan.dtype))
    if quantized:
        dequantize_model(model)  # what is still quantized, into the target dtype
    for _, value in tree_flatten(model.parameters()):
        mx.eval(value)
    mx.clear_cache()  # the sources' freed buffers would otherwise stay in MLX's cache


def _nbytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    params = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return params + bf16_linear.packed_bytes(model)


def _vocab_rows(model: Any) -> int:
    inner = backbone(model)
    module = model.lm_head if "lm_head" in model else inner.embed_tokens
    return int(module.weight.shape[0])


def _round_to(value: float, dtype: Any) -> float:
    import mlx.core as mx

    return float(mx.array(value, dtype=dtype).astype(mx.float32))


def load(model_id: str, options: LoadOptions | None = None) -> LoadedModel:
    """Load a model for the lens. Raises a :class:`LazarusError` for anything the user can fix."""
    import mlx.core as mx
    from mlx_lm.utils import load_model, load_tokenizer

    from lazarus_mcp.lens import applied_embedding_scale

    options = options or LoadOptions()
    path = resolve_model_path(model_id)
    config = read_config(path)
    family = config["model_type"]
    check_family(family)
    windows = sliding_windows(config)
    if options.device is not None:
        mx.set_default_device(getattr(mx, options.device))
    device = "gpu" if mx.default_device() == mx.gpu else "cpu"
    try:
        # Lazy when converting: _apply_plan then reads each tensor only when converting it.
        lazy = not (options.dtype == "native" or (options.dtype == "auto" and device != "cpu"))
        model, config = load_model(path, lazy=lazy, model_config=mlx_overrides(config))
        wrapper = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except Exception as exc:
        raise ModelLoadError(f"could not load the model in {path}: {exc}".splitlines()[0]) from exc
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)
    fixes = apply_port_fixes(model, config)
    inner = backbone(model)
    hidden = int(config.get("hidden_size") or inner.embed_tokens.weight.shape[-1])
    vocab = _vocab_rows(model)
    tied = "lm_head" not in model
    stored = _stored_dtype(model)
    quantization = _quantization(config)
    plan = plan_compute(options, device, stored, quantization)
    try:
        _apply_plan(model, plan, quantization is not None, tied)
    except Exception as exc:  # lazily loaded weights are only read here
        raise ModelLoadError(
            f"could not read the weights in {path}: {exc}".splitlines()[0]
        ) from exc
    compute = _stored_dtype(model)
    head = build_head(model)
    probe_ids = min(16, vocab)
    applied = applied_embedding_scale(model, probe_ids)
    intended = intended_embedding_scale(family, hidden)
    if intended is not None:
        # The family's scale sqrt(hidden), rounded as the compute dtype rounds it (as the
        # reference implementations do), not as some ports hard-code it (bfloat16).
        scale: float | None = _round_to(intended, getattr(mx, compute))
    else:
        scale = None if math.isclose(applied, 1.0, rel_tol=1e-6) else applied
    info = ModelInfo(
        model_id=model_id,
        path=str(path),
        family=family,
        num_layers=len(inner.layers),
        hidden_size=hidden,
        vocab_size=vocab,
        tied_embeddings=tied,
        embedding_scale=scale,
        final_logit_softcap=head.softcap,
        quantization=quantization,
        dtype=stored,
        compute_dtype=compute,
        weight_dtype=_weight_dtype(plan, compute, quantization),
        matmul=plan.matmul,
        device=device,
        has_chat_template=has_chat_template(tokenizer),
        corrections=fixes,
    )
    # The preload logs the BLAS before a CLI has set up logging: say it again beside the dtype.
    logger.debug("loaded %s (BLAS: %s): %s", model_id, blas.status(), info.model_dump())
    return LoadedModel(
        info=info,
        model=model,
        tokenizer=tokenizer,
        head=head,
        token_text=TokenText(tokenizer),
        applied_embedding_scale=applied,
        nbytes=_nbytes(model),
        sliding_windows=windows,
    )
