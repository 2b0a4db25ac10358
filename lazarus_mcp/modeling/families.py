"""The family registry: everything lazarus knows about an architecture, one entry per family.

A family is a config ``model_type``. Its :class:`FamilySpec` says how the model's own code must
be built and corrected to compute the reference architecture (config translation, port
corrections), which blocks attend through a sliding window, and how the lens head composes the
model's output (embedding scale, logit scaling, soft-cap). Nothing else in lazarus branches on a
family name: a new family is a new entry here.

A multimodal container (``gemma3``, ``mistral3``) is an entry that delegates to the family of
its ``text_config``: the lens runs on the language model, read with the text config's numbers.
Architectures outside the registry are not refused outright: ``self_check.py`` serves them when
the model's own head proves itself, except those named in ``NOT_RESIDUAL``.
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


VERIFIED_ON = (
    "tiny transformers-saved checkpoint: every block vs transformers, raw and chat; mlx-lm "
    "float and 4-bit layouts: last block == own logits"
)
_AND_PARITY = VERIFIED_ON + "; shared parity references"


@dataclass(frozen=True)
class Names:
    """What an architecture calls things: its config keys and its modules.

    Config keys are read in transformers' config.json (the first key present wins); module names
    are those of mlx-lm's port, on the module that holds the block list; ``block_lists`` are the
    names of the block list in checkpoint tensor names (``model.layers.3.…``, ``h.3.…``)."""

    context: tuple[str, ...] = ("max_position_embeddings",)
    heads: str = "num_attention_heads"
    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    intermediate: str = "intermediate_size"
    block_lists: tuple[str, ...] = ("layers",)
    embedding: str = "embed_tokens"
    final_norm: str = "norm"
    unembedding: str = "lm_head"


GPT2_NAMES = Names(
    context=("n_positions", "n_ctx"),
    heads="n_head",
    layers="n_layer",
    hidden="n_embd",
    intermediate="n_inner",
    block_lists=("h",),
    embedding="wte",
    final_norm="ln_f",
)
# transformers names the blocks ``gpt_neox.layers``; mlx-lm's port saves them as ``model.h``.
NEOX_NAMES = Names(
    block_lists=("layers", "h"),
    embedding="embed_in",
    final_norm="final_layer_norm",
    unembedding="embed_out",
)


@dataclass(frozen=True)
class FamilySpec:
    """What one architecture needs from lazarus."""

    model_type: str
    support: Support = "verified"
    # The embedding output is multiplied by sqrt(hidden_size) (Gemma).
    scales_embeddings: bool = False
    # Config key of a number the final logits are divided by (Granite's ``logits_scaling``).
    logit_divisor_key: str | None = None
    # Config key of a number the final logits are multiplied by (Cohere's ``logit_scale``).
    logit_multiplier_key: str | None = None
    # Config key of the final soft-cap c in c * tanh(logits / c) (Gemma 2).
    softcap_key: str | None = "final_logit_softcapping"
    # Config keys and module names (the lens head, the weights check and the request limits
    # read them here).
    names: Names = Names()
    # Per-layer attention when the config has no ``layer_types`` (None: all full attention).
    default_layer_types: Callable[[Config, int], list[str] | None] | None = None
    # Extra mlx-lm config keys beyond the generic RoPE translation.
    translate: Callable[[Config], Config] | None = None
    # Corrections of the freshly built model, before its weights are read.
    build_fixes: tuple[PortFix, ...] = ()
    # In-place corrections of the mlx-lm port, applied after loading.
    port_fixes: tuple[PortFix, ...] = ()
    # A multimodal container: the lens runs on the family of its ``text_config``.
    container: bool = False
    # What the test suite verifies this family on (one line for the docs and the CLI).
    verified_on: str = VERIFIED_ON
    # The block submodule whose input is the residual stream after the attention sub-layer has
    # been added (the MLP side's first module); None: derived from the block's module names.
    mid_residual_input: str | None = None
    # Attention and MLP read the same block input (GPT-J style): no state between them.
    parallel_residual: bool = False

    def text(self, config: Config) -> tuple[FamilySpec, Config]:
        """The spec and config of the language model (itself, unless a container)."""
        if not self.container:
            return self, config
        text_config = dict(config.get("text_config") or {})
        inner = str(text_config.get("model_type"))
        spec = FAMILIES.get(inner) or TEXT_MODELS.get(inner)
        if spec is None or spec.container:
            raise UnsupportedModelError(
                f"unsupported {self.model_type} container: its text model '{inner}' is not one "
                "the lens is verified for"
            )
        return spec, text_config

    def embedding_scale(self, hidden_size: int, config: Config | None = None) -> float | None:
        spec = self.text(config)[0] if config is not None else self
        return math.sqrt(hidden_size) if spec.scales_embeddings else None

    def softcap(self, config: Config) -> float | None:
        spec, config = self.text(config)
        value = config.get(spec.softcap_key) if spec.softcap_key else None
        return float(value) if value else None

    def logit_divisor(self, config: Config) -> float | None:
        spec, config = self.text(config)
        value = config.get(spec.logit_divisor_key) if spec.logit_divisor_key else None
        return float(value) if value else None

    def logit_multiplier(self, config: Config) -> float | None:
        spec, config = self.text(config)
        key = spec.logit_multiplier_key
        value = config.get(key) if key else None
        return float(value) if value is not None and float(value) != 1.0 else None

    def final_norm_name(self, config: Config) -> str:
        return self.text(config)[0].names.final_norm

    def layer_types(self, config: Config) -> list[str] | None:
        spec, config = self.text(config)
        explicit = hf_config.explicit_layer_types(config)
        if explicit is not None:
            return explicit
        if spec.default_layer_types is None:
            return None
        return spec.default_layer_types(config, int(config["num_hidden_layers"]))

    def sliding_windows(self, config: Config) -> dict[int, int]:
        """{block: window} for blocks that attend through a sliding window."""
        types = self.layer_types(config)
        return hf_config.windows_from_types(self.text(config)[1], types)

    def mlx_overrides(self, config: Config) -> Config:
        """Config keys to set so mlx-lm builds the model the config describes."""
        if self.container:
            spec, text_config = self.text(config)
            out = {"text_config": {**text_config, **spec.mlx_overrides(text_config)}}
        else:
            out = hf_config.rope_overrides(config)
            out.update(hf_config.derived_sizes(config, self.names.hidden, self.names.heads))
        if self.translate is not None:
            out.update(self.translate(config))
        return out

    def apply_build_fixes(self, model: Any, config: Config) -> list[str]:
        spec, text_config = self.text(config)
        fixes = (*self.build_fixes, *(spec.build_fixes if spec is not self else ()))
        return [note for fix in fixes if (note := fix(model, text_config)) is not None]

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
        spec, text_config = self.text(config)
        fixes = (*self.port_fixes, *(spec.port_fixes if spec is not self else ()))
        return [note for fix in fixes if (note := fix(model, text_config)) is not None]


def _alternating(config: Config, n: int) -> list[str]:
    # Gemma 2: sliding attention on even blocks, global on odd ones.
    return [SLIDING if i % 2 == 0 else FULL for i in range(n)]


def _gemma3_default(config: Config, n: int) -> list[str]:
    pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern")
    return hf_config.periodic_layer_types(n, int(pattern or 6))


def _every_fourth_full(config: Config, n: int) -> list[str]:
    # Cohere 2 and OLMo 3 before explicit layer_types: three sliding blocks, then a global one.
    pattern = config.get("sliding_window_pattern")
    return hf_config.periodic_layer_types(n, int(pattern or 4))


def _exaone4_default(config: Config, n: int) -> list[str] | None:
    pattern = config.get("sliding_window_pattern")
    if not isinstance(pattern, str) or not pattern:
        return None
    return [SLIDING if pattern[i % len(pattern)] == "L" else FULL for i in range(n)]


def _window_on_all(config: Config, n: int) -> list[str] | None:
    # transformers applies ``sliding_window`` to every layer when there are no layer_types.
    return [SLIDING] * n if config.get("sliding_window") else None


def _period_translate(family: str) -> Callable[[Config], Config]:
    def translate(config: Config) -> Config:
        types = FAMILIES[family].layer_types(config)
        return {} if types is None else {"sliding_window_pattern": hf_config.period_of(types)}

    return translate


def _exaone4_translate(config: Config) -> Config:
    # The port reads the pattern as a string of L (local) and G (global).
    out: Config = {"rope_scaling": config.get("rope_scaling")}  # the port requires the key
    out.update(hf_config.rope_overrides(config))
    types = FAMILIES["exaone4"].layer_types(config)
    if types is None:
        return {**out, "sliding_window_pattern": None}
    period = hf_config.period_of(types)
    return {**out, "sliding_window_pattern": "L" * (period - 1) + "G"}


def _gpt2_translate(config: Config) -> Config:
    return {"n_ctx": int(config.get("n_ctx") or config["n_positions"])}


def _neox_translate(config: Config) -> Config:
    rope = hf_config.rope_overrides(config)
    theta: float = rope.get("rope_theta") or config.get("rotary_emb_base") or 10000.0
    pct: float = rope.get("partial_rotary_factor") or config.get("rotary_pct") or 1.0
    return {"rotary_emb_base": float(theta), "rotary_pct": float(pct)}


def _experts_translate(config: Config) -> Config:
    # transformers 5 saves Qwen3-MoE's expert count as ``num_local_experts``.
    count = config.get("num_experts", config.get("num_local_experts"))
    return {} if count is None else {"num_experts": int(count)}


def _lfm2_translate(config: Config) -> Config:
    # The port sizes its blocks by ``block_dim``, which transformers 5 no longer writes.
    return {"block_dim": int(config.get("block_dim") or config["hidden_size"])}


def _gemma3_container(config: Config) -> Config:
    # The port sizes the language model by the container's vocab_size (default 262208), not
    # the text config's.
    text_vocab = (config.get("text_config") or {}).get("vocab_size")
    return {"vocab_size": int(text_vocab or config.get("vocab_size") or 262208)}


def _mistral3_container(config: Config) -> Config:
    # transformers ties the head as the container says; the port reads only the text config.
    text_config = dict(config.get("text_config") or {})
    spec = FAMILIES[text_config.get("model_type", "mistral")]
    text_config.update(spec.mlx_overrides(text_config))
    text_config["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    return {"text_config": text_config}


def _fixes(*names: str) -> tuple[PortFix, ...]:
    from lazarus_mcp.modeling import ports

    return tuple(getattr(ports, name) for name in names)


_SPECS = (
    FamilySpec("llama", verified_on=_AND_PARITY),
    FamilySpec("mistral", default_layer_types=_window_on_all, verified_on=_AND_PARITY),
    FamilySpec("qwen2"),
    FamilySpec("qwen3", verified_on=_AND_PARITY),
    FamilySpec("phi3", default_layer_types=_window_on_all, verified_on=_AND_PARITY),
    FamilySpec("olmo2", mid_residual_input="mlp", verified_on=_AND_PARITY),
    FamilySpec("granite", logit_divisor_key="logits_scaling"),
    FamilySpec(
        "gemma",
        scales_embeddings=True,
        port_fixes=_fixes("gemma_tanh_gelu"),
        verified_on=_AND_PARITY,
    ),
    FamilySpec(
        "gemma2",
        scales_embeddings=True,
        default_layer_types=_alternating,
        verified_on=_AND_PARITY,
        mid_residual_input="pre_feedforward_layernorm",
    ),
    FamilySpec(
        "gemma3_text",
        scales_embeddings=True,
        default_layer_types=_gemma3_default,
        translate=_period_translate("gemma3_text"),
        verified_on=_AND_PARITY,
        mid_residual_input="pre_feedforward_layernorm",
    ),
    FamilySpec("gemma3", container=True, translate=_gemma3_container),
    FamilySpec("mistral3", container=True, translate=_mistral3_container),
    FamilySpec(
        "gpt2",
        translate=_gpt2_translate,
        build_fixes=_fixes("strip_transformer_prefix"),
        names=GPT2_NAMES,
        mid_residual_input="ln_2",
    ),
    FamilySpec(
        "gpt_neox",
        translate=_neox_translate,
        build_fixes=_fixes("neox_mlp"),
        names=NEOX_NAMES,
        parallel_residual=True,  # Pythia's use_parallel_residual
    ),
    FamilySpec("phi", parallel_residual=True, names=Names(final_norm="final_layernorm")),
    FamilySpec("mixtral", default_layer_types=_window_on_all),
    FamilySpec("qwen2_moe"),
    FamilySpec("qwen3_moe", translate=_experts_translate),
    FamilySpec("olmoe"),
    FamilySpec("granitemoe", logit_divisor_key="logits_scaling"),
    FamilySpec("cohere", logit_multiplier_key="logit_scale", parallel_residual=True),
    FamilySpec(
        "cohere2",
        logit_multiplier_key="logit_scale",
        parallel_residual=True,
        default_layer_types=_every_fourth_full,
        translate=_period_translate("cohere2"),
    ),
    FamilySpec("olmo3", default_layer_types=_every_fourth_full),
    FamilySpec("smollm3"),
    FamilySpec("stablelm"),
    FamilySpec("glm4"),
    FamilySpec("exaone4", default_layer_types=_exaone4_default, translate=_exaone4_translate),
    FamilySpec(
        "starcoder2", default_layer_types=_window_on_all, port_fixes=_fixes("starcoder2_gelu")
    ),
    FamilySpec("ministral3"),
    FamilySpec("llama4", container=True),
    FamilySpec("deepseek_v3"),
    FamilySpec("qwen3_next"),
    FamilySpec(
        "lfm2",
        translate=_lfm2_translate,
        names=Names(final_norm="embedding_norm"),
        mid_residual_input="ffn_norm",
    ),
    FamilySpec(
        "gpt_oss",
        default_layer_types=_alternating,
        build_fixes=_fixes("fused_experts_layout"),
        port_fixes=_fixes("yarn_untruncated"),
    ),
)

FAMILIES: dict[str, FamilySpec] = {spec.model_type: spec for spec in _SPECS}

# Language models verified only inside their container: mlx-lm's standalone port of these
# differs (llama4_text: no MoE layers), so a checkpoint of one alone is self-checked instead.
TEXT_MODELS: dict[str, FamilySpec] = {"llama4_text": FamilySpec("llama4_text")}

# Architectures mlx-lm runs that are not residual-block transformers: no lens, with the reason.
NOT_RESIDUAL: dict[str, str] = {
    "mamba": "a pure state-space model (its blocks carry a recurrent state, no attention)",
    "mamba2": "a pure state-space model (its blocks carry a recurrent state, no attention)",
    "rwkv7": "a recurrent model (RWKV time mixing, no attention)",
    "gemma3n": "an AltUp model (its blocks carry several parallel residual streams, which its "
    "head mixes; mlx-lm's port also shares KV between blocks only through a cache)",
}


def family_spec(model_type: str) -> FamilySpec:
    """The registry's entry, or a clear refusal naming what is supported."""
    spec = FAMILIES.get(model_type)
    if spec is None:
        known = ", ".join(sorted(FAMILIES))
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': the lens is verified for {known}"
        )
    return spec
