"""The family registry: everything lazarus knows about an architecture, one entry per family.

A family is a config ``model_type``. Its :class:`FamilySpec` says how the model's own code must
be built and corrected to compute the reference architecture (config translation, port
corrections), which blocks attend through a sliding window, and how the lens head composes the
model's output (embedding scale, logit scaling, soft-cap). Nothing else in lazarus branches on a
family name: a new family is a new entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.modeling import hf_config
from lazarus_mcp.modeling.hf_config import FULL, SLIDING

Config = dict[str, Any]
PortFix = Callable[[Any, Config], "str | None"]
Support = Literal["verified", "self-checked"]


@dataclass(frozen=True)
class FamilySpec:
    """What one architecture needs from lazarus."""

    model_type: str
    support: Support = "verified"
    # The embedding output is multiplied by sqrt(hidden_size) (Gemma).
    scales_embeddings: bool = False
    # Config key of a number the final logits are divided by (Granite's ``logits_scaling``).
    logit_divisor_key: str | None = None
    # Config key of the final soft-cap c in c * tanh(logits / c) (Gemma 2).
    softcap_key: str | None = "final_logit_softcapping"
    # Per-layer attention when the config has no ``layer_types`` (None: all full attention).
    default_layer_types: Callable[[Config, int], list[str] | None] | None = None
    # Extra mlx-lm config keys beyond the generic RoPE translation.
    translate: Callable[[Config], Config] | None = None
    # In-place corrections of the mlx-lm port, applied after loading.
    port_fixes: tuple[Callable[[Any, Config], str | None], ...] = ()
    # Tiny checkpoints the test suite verifies this family on (one line for the docs).
    verified_on: str = "tiny random checkpoints against transformers"
    # The block submodule whose input is the residual stream after the attention sub-layer has
    # been added (the MLP side's first module); None: derived from the block's module names.
    mid_residual_input: str | None = None
    # Attention and MLP read the same block input (GPT-J style): no state between them.
    parallel_residual: bool = False

    def embedding_scale(self, hidden_size: int) -> float | None:
        return math.sqrt(hidden_size) if self.scales_embeddings else None

    def softcap(self, config: Config) -> float | None:
        value = config.get(self.softcap_key) if self.softcap_key else None
        return float(value) if value else None

    def logit_divisor(self, config: Config) -> float | None:
        value = config.get(self.logit_divisor_key) if self.logit_divisor_key else None
        return float(value) if value else None

    def layer_types(self, config: Config) -> list[str] | None:
        explicit = hf_config.explicit_layer_types(config)
        if explicit is not None:
            return explicit
        if self.default_layer_types is None:
            return None
        return self.default_layer_types(config, int(config["num_hidden_layers"]))

    def sliding_windows(self, config: Config) -> dict[int, int]:
        """{block: window} for blocks that attend through a sliding window."""
        return hf_config.windows_from_types(config, self.layer_types(config))

    def mlx_overrides(self, config: Config) -> Config:
        """Config keys to set so mlx-lm builds the model the config describes."""
        out = hf_config.rope_overrides(config)
        if self.translate is not None:
            out.update(self.translate(config))
        return out

    def mid_residual_module(self, block: Any) -> str | None:
        """Name of the block's submodule that receives the post-attention residual stream, or
        None where the block has no such state (parallel residual) or it cannot be told."""
        if self.parallel_residual:
            return None
        if self.mid_residual_input is not None:
            return self.mid_residual_input
        names = set(block.children()) if hasattr(block, "children") else set()
        # A post-MLP norm means "post_attention_layernorm" normalizes the attention output
        # (Gemma 2/3, OLMo 2); then the MLP side starts at its pre-norm or the MLP itself.
        if "post_feedforward_layernorm" in names:
            return "pre_feedforward_layernorm" if "pre_feedforward_layernorm" in names else "mlp"
        return "post_attention_layernorm" if "post_attention_layernorm" in names else None

    def apply_port_fixes(self, model: Any, config: Config) -> list[str]:
        """Correct the loaded model in place; returns what was corrected."""
        return [note for fix in self.port_fixes if (note := fix(model, config)) is not None]


def _alternating(config: Config, n: int) -> list[str]:
    # Gemma 2: sliding attention on even blocks, global on odd ones.
    return [SLIDING if i % 2 == 0 else FULL for i in range(n)]


def _gemma3_default(config: Config, n: int) -> list[str]:
    pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern")
    return hf_config.periodic_layer_types(n, int(pattern or 6))


def _window_on_all(config: Config, n: int) -> list[str] | None:
    # transformers applies ``sliding_window`` to every layer when there are no layer_types.
    return [SLIDING] * n if config.get("sliding_window") else None


def _gemma3_translate(config: Config) -> Config:
    types = FAMILIES["gemma3_text"].layer_types(config)
    return {} if types is None else {"sliding_window_pattern": hf_config.period_of(types)}


def _gemma_fixes() -> tuple[Callable[[Any, Config], str | None], ...]:
    from lazarus_mcp.modeling.ports import gemma_tanh_gelu

    return (gemma_tanh_gelu,)


_SPECS = (
    FamilySpec("llama"),
    FamilySpec("mistral", default_layer_types=_window_on_all),
    FamilySpec("qwen2"),
    FamilySpec("qwen3"),
    FamilySpec("phi3", default_layer_types=_window_on_all),
    FamilySpec("olmo2", mid_residual_input="mlp"),
    FamilySpec("granite", logit_divisor_key="logits_scaling"),
    FamilySpec("gemma", scales_embeddings=True, port_fixes=_gemma_fixes()),
    FamilySpec(
        "gemma2",
        scales_embeddings=True,
        default_layer_types=_alternating,
        mid_residual_input="pre_feedforward_layernorm",
    ),
    FamilySpec(
        "gemma3_text",
        scales_embeddings=True,
        default_layer_types=_gemma3_default,
        translate=_gemma3_translate,
        mid_residual_input="pre_feedforward_layernorm",
    ),
)

FAMILIES: dict[str, FamilySpec] = {spec.model_type: spec for spec in _SPECS}


def family_spec(model_type: str) -> FamilySpec:
    """The registry's entry, or a clear refusal naming what is supported."""
    spec = FAMILIES.get(model_type)
    if spec is None:
        known = ", ".join(sorted(FAMILIES))
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': the lens is verified for {known}"
        )
    return spec
