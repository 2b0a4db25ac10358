"""Load a checkpoint with mlx-lm (or a GGUF file, ``gguf_loading.py``), convert it as planned,
correct its port, and describe it.

Runs on the MLX worker thread (it creates MLX arrays), inside the model's device scope.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from lazarus_mcp.accel import bf16_linear, blas, cpu_gemm
from lazarus_mcp.errors import LazarusError, ModelLoadError, UnsupportedModelError
from lazarus_mcp.lens.embedding_scale import applied_embedding_scale
from lazarus_mcp.lens.head import (
    LensHead,
    backbone,
    blocks,
    build_head,
    embedding,
    embedding_slot,
    unembedding_module,
)
from lazarus_mcp.lens.tokens import TokenText, has_chat_template
from lazarus_mcp.modeling import gguf_config, gguf_loading, model_config
from lazarus_mcp.modeling.checkpoint import read_config, resolve_model_path
from lazarus_mcp.modeling.families import FAMILIES, FamilySpec, Names
from lazarus_mcp.modeling.gguf_header import GGUFHeader
from lazarus_mcp.modeling.gguf_loading import is_gguf
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.modeling.safe_files import check_checkpoint_files
from lazarus_mcp.modeling.self_check import probe_ids, refuse_known, self_checked_head
from lazarus_mcp.modeling.weights import check_weights
from lazarus_mcp.runtime.limits import CallInterrupted, check_interrupt
from lazarus_mcp.runtime.limits import current as current_limits
from lazarus_mcp.schema import ModelInfo, QuantizationInfo

logger = logging.getLogger(__name__)


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
    config: dict[str, Any] = field(default_factory=dict)  # config.json, as the model was built

    def mid_residual_module(self, block: Any) -> str | None:
        """The block's submodule that receives the post-attention residual stream (the family
        registry's name; outside it, derived from the block's module names), or None."""
        spec = FAMILIES.get(self.info.family)
        if spec is None:
            spec = FamilySpec(self.info.family, support="self-checked")
        return spec.text(self.config)[0].mid_residual_module(block)

    @property
    def context_length(self) -> int | None:
        return model_config.context_length(self.config)

    @property
    def num_heads(self) -> int | None:
        return model_config.num_heads(self.config)

    @property
    def intermediate_size(self) -> int | None:
        return model_config.intermediate_size(self.config)

    def embedding_factor(self, override: float | None) -> float:
        """Factor on the embedding lookup that makes the forward use the wanted scale."""
        wanted = override if override is not None else self.info.embedding_scale
        if wanted is None:
            return 1.0
        return wanted / self.applied_embedding_scale

    def scope(self) -> AbstractContextManager[Any]:
        """Run MLX work on this model's device, whatever another model's load chose."""
        return mx.stream(getattr(mx, self.info.device))


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
    if plan.dtype == "native" and q is not None:
        return f"{q.bits}-bit {q.mode}, groups of {q.group_size} (as stored)"
    return "bfloat16" if plan.matmul != "mlx" else compute


def _apply_plan(model: Any, plan: ComputePlan, quantized: bool, tied: bool) -> None:
    """Convert a lazily loaded model as planned, one tensor at a time.

    Each weight is read from the file, converted and its source freed before the next, so the
    peak stays near the converted weights' size instead of adding the checkpoint's (a bfloat16
    1B model to float32: 4.4 GB, not 6.6). Quantization scales and biases are converted first,
    so dequantization computes in the target dtype directly, without a bfloat16 round trip.
    """
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model

    if plan.dtype != "native":
        if plan.matmul != "mlx":
            if quantized and plan.matmul == bf16_linear.FAST:
                dequantize_model(model)  # lazily, as MLX's dequantize does (in the scales' dtype)
            bf16_linear.pack_model(model, tied, plan.matmul, between=check_interrupt)
        model.set_dtype(getattr(mx, plan.dtype))
        if quantized:
            dequantize_model(model)  # what is still quantized, into the target dtype
    for _, value in tree_flatten(model.parameters()):
        # A load is part of its call: past the call's deadline it stops here, between tensors,
        # and the model is dropped whole (runtime/cache.py).
        check_interrupt()
        mx.eval(value)
    mx.clear_cache()  # the sources' freed buffers would otherwise stay in MLX's cache


def _nbytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    params = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return params + bf16_linear.packed_bytes(model)


def _vocab_rows(model: Any, names: Names | None) -> int:
    module = unembedding_module(model, names.unembedding if names else None)
    if module is None:
        module = embedding(model, names.embedding if names else None)
    return int(module.weight.shape[0])


def _check_embedding(model: Any, names: Names) -> None:
    """The registry's embedding is the one a tapped forward swaps (found unnamed, by kind)."""
    if embedding_slot(model) != embedding_slot(model, names.embedding):
        raise UnsupportedModelError(
            f"unsupported model: its first embedding table is not the token embedding "
            f"'{names.embedding}' the family registry names"
        )


def _model_classes(spec: FamilySpec | None, config: dict[str, Any]) -> Any:
    """mlx-lm's class lookup, with the family's build corrections on the built model."""
    from mlx_lm.utils import _get_classes

    def classes(config: dict[str, Any]) -> tuple[Any, Any]:
        model_class, args_class = _get_classes(config)
        if spec is None or not (spec.build_fixes or spec.text(config)[0].build_fixes):
            return model_class, args_class

        def build(args: Any) -> Any:
            model = model_class(args)
            build_notes.extend(spec.apply_build_fixes(model, config))
            return model

        return build, args_class

    build_notes: list[str] = []
    return classes, build_notes


def _round_to(value: float, dtype: Any) -> float:
    return float(mx.array(value, dtype=dtype).astype(mx.float32))


def _device_name(options: LoadOptions) -> str:
    if options.device is not None:
        return options.device
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def refuse_remote_code(config: dict[str, Any]) -> None:
    """A checkpoint that ships its own Python (``auto_map``) is never run, and the message says
    only what the caller can do (it cannot change how the server loads models)."""
    if config.get("auto_map"):
        raise UnsupportedModelError(
            "this checkpoint needs its own Python code to run, which lazarus never executes; "
            "use a checkpoint of a supported family"
        )


def load_failure(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "trust_remote_code" in text or "remote code" in text:
        return (
            f"could not load the model in {path}: it needs its own Python code to run, which "
            "lazarus never executes; use a checkpoint of a supported family"
        )
    return f"could not load the model in {path}: {text}".splitlines()[0][:500]


def load(
    model_id: str,
    options: LoadOptions | None = None,
    keep: Callable[[Any, FamilySpec | None], None] | None = None,
) -> LoadedModel:
    """Load a model for the lens. Raises a :class:`LazarusError` for anything the user can fix.

    The model is built and converted on its own device (a stream scope, not MLX's process-wide
    default), and every later call on it runs in the same scope (:meth:`LoadedModel.scope`).
    ``keep`` (a pipeline stage, ``distributed/stage_load.py``) drops the modules this process
    does not run from the lazily built model before any weight is read.
    """
    options = options or LoadOptions()
    device = _device_name(options)
    with mx.stream(getattr(mx, device)):
        return _load(model_id, options, device, keep)


@dataclass
class _Built:
    """A built model before the plan converts it: what either file format gives."""

    model: Any
    config: dict[str, Any]
    tokenizer: Any
    spec: FamilySpec | None
    build_notes: list[str]
    gguf: GGUFHeader | None = None
    plan: ComputePlan | None = None


def _format_fields(header: GGUFHeader | None) -> dict[str, Any]:
    if header is None:
        return {}
    return {"format": "gguf", "file_type": header.file_type, "tensor_types": header.type_counts}


def _load(
    model_id: str,
    options: LoadOptions,
    device: str,
    keep: Callable[[Any, FamilySpec | None], None] | None = None,
) -> LoadedModel:
    """``keep``: a pipeline stage's hook (``distributed/``) dropping the blocks it does not run,
    after the model is built and before any weight is read."""
    path = resolve_model_path(model_id)
    if is_gguf(path):
        built = _build_gguf(path, options, device)
    else:
        built = _build(path, options, device, keep is not None)
    return _describe(model_id, path, built, options, device, keep)


def _build_gguf(path: Path, options: LoadOptions, device: str) -> _Built:
    """One GGUF file (``gguf_loading.py``): the plan is chosen from its header, before anything
    is built, so the memory estimate is of what the load will hold."""
    header, config = gguf_loading.read(path, lambda h: _gguf_need(h, options, device))
    spec = FAMILIES[str(config["model_type"])]
    plan = _gguf_plan(options, device, _quantization(config))
    classes, build_notes = _model_classes(spec, config)
    dtype = gguf_loading.dequantized_dtype(options.dtype, device)
    try:
        model, config = gguf_loading.build(header, config, classes, dtype)
    except LazarusError:
        raise
    except Exception as exc:
        raise ModelLoadError(load_failure(path, exc)) from exc
    tokenizer = gguf_config.tokenizer(header)
    return _Built(model, config, tokenizer, spec, build_notes, header, plan)


def _gguf_plan(options: LoadOptions, device: str, q: QuantizationInfo | None) -> ComputePlan:
    if q is not None and options.dtype == "auto":
        # A GGUF file's Q4_0/Q4_1/Q8_0 layers stay quantized, computed by MLX: about the file's
        # size (SmolLM2 Q4_1: 98 MB). The affine kernel's packing would hold ~3x that, and
        # float32 8x; --dtype float32 or bfloat16 asks for those.
        return ComputePlan("native")
    return plan_compute(options, device, "float32", q)


def _gguf_need(header: GGUFHeader, options: LoadOptions, device: str) -> int:
    itemsize = gguf_loading.dequantized_dtype(options.dtype, device).size
    q = gguf_loading.quantization_of(header)
    plan = _gguf_plan(options, device, QuantizationInfo(**q) if q else None)
    if plan.matmul == "mlx" and plan.dtype not in ("native",) and q is not None:
        return gguf_loading.loaded_bytes(header, itemsize, quantized_extra=32 * itemsize)
    return gguf_loading.loaded_bytes(header, itemsize)


def _build(path: Path, options: LoadOptions, device: str, staged: bool = False) -> _Built:
    from mlx_lm.utils import load_model, load_tokenizer

    config = read_config(path)
    family = str(config.get("model_type"))
    spec = FAMILIES.get(family)
    if spec is None:
        refuse_known(family, config)
    # Before mlx-lm builds anything from the config: the files, the weights' shapes, the budget.
    refuse_remote_code(config)
    check_checkpoint_files(path)
    # A pipeline stage checks its own share against the budget (``keep``), not the whole model.
    check_weights(
        path, config, dataclasses.replace(current_limits(), memory_budget=None) if staged else None
    )
    classes, build_notes = _model_classes(spec, config)
    try:
        # Lazy: _apply_plan then reads each tensor when converting it (or, kept as stored,
        # evaluating it), checking the call's deadline between tensors.
        overrides = spec.mlx_overrides(config) if spec else {}
        model, config = load_model(
            path, lazy=True, model_config=overrides, get_model_classes=classes
        )
        # Building the model drew its (discarded) initial weights from MLX's global random key,
        # lazily: unevaluated, the key's graph grows by every draw of every load (95 KB per
        # load of a 6-block model, 138 MB over 1,000 load/evict cycles). Evaluated, it is one key.
        mx.eval(mx.random.state)
        wrapper = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except Exception as exc:
        if spec is None and "not supported" in str(exc):
            raise UnsupportedModelError(
                f"unsupported architecture '{family[:80]}': mlx-lm has no model for it"
            ) from exc
        raise ModelLoadError(load_failure(path, exc)) from exc
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)
    return _Built(model, config, tokenizer, spec, build_notes)


def _describe(
    model_id: str,
    path: Path,
    built: _Built,
    options: LoadOptions,
    device: str,
    keep: Callable[[Any, FamilySpec | None], None] | None = None,
) -> LoadedModel:
    model, config, tokenizer, spec = built.model, built.config, built.tokenizer, built.spec
    family = str(config.get("model_type"))
    windows = spec.sliding_windows(config) if spec else {}
    fixes = built.build_notes + (spec.apply_port_fixes(model, config) if spec else [])
    backbone(model)  # a clear refusal for a model without a block list
    names = spec.text(config)[0].names if spec else None
    if names is not None:
        _check_embedding(model, names)
    if keep is not None:
        keep(model, spec)
    hidden = model_config.hidden_size(config) or int(embedding(model).weight.shape[-1])
    vocab = _vocab_rows(model, names)
    tied = unembedding_module(model, names.unembedding if names else None) is None
    stored = _stored_dtype(model)
    quantization = _quantization(config)
    plan = built.plan or plan_compute(options, device, stored, quantization)
    try:
        _apply_plan(model, plan, quantization is not None, tied)
    except CallInterrupted:
        raise  # the call's deadline, between tensors: the call's own error
    except Exception as exc:  # lazily loaded weights are only read here
        raise ModelLoadError(
            f"could not read the weights in {path}: {exc}".splitlines()[0]
        ) from exc
    compute = _stored_dtype(model)
    if spec is not None:
        head = build_head(
            model,
            spec.softcap(config),
            spec.logit_divisor(config),
            spec.logit_multiplier(config),
            spec.final_norm_name(config),
            spec.text(config)[0].names.unembedding,
            spec.text(config)[0].names.embedding,
        )
    else:
        head = self_checked_head(family, model, probe_ids(tokenizer, vocab))
    applied = applied_embedding_scale(model, min(16, vocab), names.embedding if names else None)
    intended = spec.embedding_scale(hidden, config) if spec else None
    if intended is not None:
        # The family's scale sqrt(hidden), rounded as the compute dtype rounds it (as the
        # reference implementations do), not as some ports hard-code it (bfloat16).
        scale: float | None = _round_to(intended, getattr(mx, compute))
    else:
        scale = None if math.isclose(applied, 1.0, rel_tol=1e-6) else applied
    requantized = None
    if options.requantize is not None and built.gguf is not None and spec is not None:
        from lazarus_mcp.modeling.requantize import requantize

        head, requantized = requantize(
            model,
            lambda: build_head(
                model,
                spec.softcap(config),
                spec.logit_divisor(config),
                spec.logit_multiplier(config),
                spec.final_norm_name(config),
            ),
            probe_ids(tokenizer, vocab),
            options.requantize,
            1.0 if scale is None else scale / applied,
        )
        quantization = QuantizationInfo(bits=requantized.bits, group_size=requantized.group_size)
    info = ModelInfo(
        model_id=model_id,
        path=str(path),
        family=family,
        num_layers=len(blocks(model)),
        hidden_size=hidden,
        vocab_size=vocab,
        tied_embeddings=tied,
        embedding_scale=scale,
        final_logit_softcap=head.softcap,
        quantization=quantization,
        dtype=built.gguf.file_type or stored if built.gguf is not None else stored,
        compute_dtype=compute,
        weight_dtype=_weight_dtype(plan, compute, quantization),
        matmul=plan.matmul,
        device=device,
        has_chat_template=has_chat_template(tokenizer),
        corrections=fixes,
        support=spec.support if spec else "self-checked",
        requantization=requantized,
        **_format_fields(built.gguf),
    )
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
        config=config,
    )
