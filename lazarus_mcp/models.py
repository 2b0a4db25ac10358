"""The result contract: pydantic models shared by the Python API, the CLI and the MCP server.

Every interface returns these models and serializes them the same way (``model_dump(mode="json")``
or :func:`to_json`): an agent's tool result and ``lazarus ... -o file.json`` agree field for
field.
"""

from __future__ import annotations

from enum import Enum

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator


class LayerStrategy(str, Enum):
    """Which blocks to look at. Block i is the residual stream after transformer block i."""

    ALL = "all"
    EVENLY_SPACED = "evenly_spaced"
    FIRST_LAST = "first_last"
    CUSTOM = "custom"


class AnalysisConfig(BaseModel):
    """What to compute for one prompt."""

    model_config = ConfigDict(extra="forbid")

    layer_strategy: LayerStrategy = Field(
        LayerStrategy.EVENLY_SPACED,
        description="all | evenly_spaced (every layer_step-th block from 0, plus the last) | "
        "first_last | custom (requires custom_layers).",
    )
    layer_step: int = Field(4, ge=1, description="Spacing for evenly_spaced.")
    custom_layers: list[int] | None = Field(
        None,
        description="Block indices for custom; negative indices count from the end (-1 = last).",
    )
    top_k: int = Field(
        5, ge=1, description="How many top tokens to list per layer (<= vocab size)."
    )
    track_tokens: list[str] = Field(
        default_factory=list,
        description="Token strings whose probability and rank to follow across layers, "
        "e.g. ' Paris' (leading space included as the model spells it).",
    )
    use_chat_template: bool = Field(
        True,
        description="Wrap the prompt in the tokenizer's chat template (one user message plus the "
        "generation prompt) when it has one; false tokenizes the prompt as given.",
    )
    embedding_scale: float | None = Field(
        None,
        gt=0,
        description="Replace the model's own embedding scale for this run (Gemma: sqrt(hidden)).",
    )

    @model_validator(mode="after")
    def _custom_needs_layers(self) -> AnalysisConfig:
        if self.layer_strategy is LayerStrategy.CUSTOM and not self.custom_layers:
            raise ValueError("layer_strategy 'custom' requires custom_layers (e.g. [0, 4, -1])")
        return self


class QuantizationInfo(BaseModel):
    bits: int
    group_size: int
    mode: str = "affine"


class ModelInfo(BaseModel):
    """What the lens needs to know about a model, read from its config and weights."""

    model_id: str = Field(description="The id or path the model was requested by.")
    path: str = Field(description="The local directory the checkpoint was read from.")
    family: str = Field(description="The config's model_type, e.g. llama, gemma2, qwen3.")
    num_layers: int = Field(description="Transformer blocks; lens layers are numbered 0..N-1.")
    hidden_size: int
    vocab_size: int = Field(description="Rows of the unembedding (ranks are over all of them).")
    tied_embeddings: bool = Field(description="The unembedding is the input embedding matrix.")
    embedding_scale: float | None = Field(
        None, description="Factor the model applies to its embeddings (Gemma: sqrt(hidden))."
    )
    final_logit_softcap: float | None = Field(
        None, description="c in logits = c * tanh(logits / c), applied to every layer's lens."
    )
    quantization: QuantizationInfo | None = None
    dtype: str = Field(description="The dtype of the checkpoint's weights as stored.")
    compute_dtype: str = Field(
        description="The dtype of the activations (the residual stream) here."
    )
    weight_dtype: str = Field(description="The dtype of the weights the linear layers read here.")
    matmul: str = Field(
        description="What computes the linear layers here: 'mlx' (MLX's own matmul; on the CPU "
        "float32 through BLAS), or lazarus's AVX512-BF16 CPU kernel on the stored bfloat16 "
        "weights with float32 sums: 'lazarus-bf16x2' (inputs split into two bfloat16 parts, "
        "float32-accurate) or 'lazarus-bf16' (inputs rounded to bfloat16, as a bfloat16 model)."
    )
    device: str = Field(description="The MLX device the model runs on (cpu or gpu).")
    has_chat_template: bool
    corrections: list[str] = Field(
        default_factory=list,
        description="Where the MLX port departs from the reference architecture and was corrected.",
    )


class TokenProbability(BaseModel):
    token: str = Field(description="The token as the model sees it (leading spaces kept).")
    token_id: int
    probability: float


class LayerPrediction(BaseModel):
    """The lens at one block: what the model would predict if it stopped there."""

    layer_idx: int
    top_token: str
    top_token_id: int
    top_probability: float
    top_k: list[TokenProbability]
    entropy: float = Field(description="Entropy of the layer's distribution, in nats.")
    kl_divergence: float = Field(
        description="KL(final || layer) in nats: how far this layer is from the final output."
    )


class TokenAtLayer(BaseModel):
    layer_idx: int
    probability: float
    rank: int = Field(description="1-based rank over the whole vocabulary (1 = top prediction).")


class TokenEvolution(BaseModel):
    """How one tracked token's probability and rank change across the captured layers."""

    query: str = Field(description="The string that was asked for.")
    token: str = Field(description="The token that is tracked (the first piece if several).")
    token_id: int
    pieces: list[str] = Field(description="How the query tokenizes; one entry if exact.")
    multi_token: bool = Field(description="The query is several tokens; the first is tracked.")
    layers: list[TokenAtLayer]
    final_probability: float
    final_rank: int
    emergence_layer: int | None = Field(
        description="First captured layer where the token is rank 1; null if it never is."
    )


class AnalysisResult(BaseModel):
    """The logit lens of one prompt at its last position."""

    model: ModelInfo
    prompt: str
    text_seen: str = Field(description="The text that was tokenized (after the chat template).")
    chat_template_applied: bool
    tokens: list[str]
    token_ids: list[int]
    position: int = Field(description="Index of the analyzed token (the last one).")
    embedding_scale: float | None = Field(
        description="The embedding scale used for this run (the model's own unless overridden)."
    )
    config: AnalysisConfig
    captured_layers: list[int]
    final_prediction: list[TokenProbability] = Field(
        description="Top-k of the model's own output distribution."
    )
    layer_predictions: list[LayerPrediction]
    token_evolutions: list[TokenEvolution]


def to_json(model: BaseModel, indent: bool = True) -> bytes:
    """The one serialization every interface writes."""
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(model.model_dump(mode="json"), option=option)
