"""The analysis contract: what to compute for one prompt and the logit lens it returns."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from lazarus_mcp.schema.fidelity import Fidelity, Milestones
from lazarus_mcp.schema.prompt import PromptRun

# The one message for a custom strategy without layers, whichever interface asked.
CUSTOM_NEEDS_LAYERS = (
    "layer_strategy 'custom' needs layers: custom_layers in the API, layers in the MCP tools; "
    "the CLI requires --layers (e.g. 0,4,-1)"
)


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
    custom_layers: list[StrictInt] | None = Field(
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
    # The grid options are left out of the JSON at their defaults, so a default result stays
    # byte for byte what it was before they existed.
    positions: Literal["last", "all"] | list[StrictInt] = Field(
        "last",
        exclude_if=lambda v: v == "last",
        description="Which prompt positions to read: 'last' (the prediction of the next token), "
        "'all' (every position: the grid), or a list of indices (negative from the end).",
    )
    lens: str = Field(
        "logit",
        min_length=1,
        max_length=1000,
        exclude_if=lambda v: v == "logit",
        description="'logit' (the model's own head on every block), or a lens directory of a "
        "tuned or Jacobian lens made for this model (reads the early blocks far better; "
        "MCP: a path under the server's --lens-dir).",
    )
    include_embeddings: bool = Field(
        False,
        exclude_if=lambda v: not v,
        description="Add a row for the embedding output (before block 0), with layer_idx null.",
    )

    @model_validator(mode="after")
    def _custom_needs_layers(self) -> AnalysisConfig:
        if self.layer_strategy is LayerStrategy.CUSTOM and not self.custom_layers:
            raise ValueError(CUSTOM_NEEDS_LAYERS)
        if isinstance(self.positions, list) and not self.positions:
            raise ValueError("positions is empty: give 'last', 'all' or indices such as [0, -1]")
        return self


class LensUsed(BaseModel):
    """Which lens a result read its blocks through."""

    kind: str = Field("logit", description="logit | tuned | jacobian")
    path: str | None = Field(None, description="The lens directory (None: the logit lens).")
    fit: dict[str, float] | None = Field(
        None,
        description="The lens's held-out fit: mean KL(model output || block) over blocks "
        "0..N-2 under the logit lens and under this lens, nats; the tokens it was measured on.",
    )


class TokenProbability(BaseModel):
    token: str = Field(description="The token as the model sees it (leading spaces kept).")
    token_id: int
    probability: float


class LayerPrediction(BaseModel):
    """The lens at one block: what the model would predict if it stopped there."""

    layer_idx: int | None = Field(
        description="The block (0-based); null for the embedding output, before block 0."
    )
    top_token: str
    top_token_id: int
    top_probability: float
    top_k: list[TokenProbability]
    entropy: float = Field(description="Entropy of the layer's distribution, in nats.")
    kl_divergence: float = Field(
        description="KL(final || layer) in nats: how far this layer is from the final output."
    )


class TokenAtLayer(BaseModel):
    layer_idx: int | None = Field(description="The block; null for the embedding output.")
    probability: float
    rank: int = Field(description="1-based rank over the whole vocabulary (1 = top prediction).")
    sequence_logprob: float | None = Field(
        None,
        description="Multi-token queries: the whole string's teacher-forced log-probability at "
        "this layer (each piece's lens log-probability at the position before it, summed).",
    )


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
        description="First captured block where the token is rank 1; null if it never is."
    )
    final_sequence_logprob: float | None = Field(
        None,
        description="Multi-token queries: the whole string's log-probability from the model's "
        "own output (teacher-forced, same forward pass).",
    )


class PositionLens(BaseModel):
    """The lens at one position of the prompt: one column of the grid."""

    position: int = Field(description="Index of the token in the prompt (0-based).")
    token: str = Field(description="The token at this position; the rows predict the next one.")
    token_id: int
    final_prediction: list[TokenProbability] = Field(
        description="Top-k of the model's own output distribution at this position."
    )
    layer_predictions: list[LayerPrediction]
    token_evolutions: list[TokenEvolution]


class AnalysisResult(PromptRun):
    """The logit lens of one prompt at its last position."""

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
    fidelity: Fidelity = Field(
        description="The lens head on the last block vs the model's own output, this call."
    )
    milestones: Milestones = Field(description="Where the final answer forms; read these first.")
    lens: LensUsed = Field(
        default_factory=LensUsed,
        description="The lens every block was read through (config.lens): "
        "{kind: logit, path: null, fit: null} for the logit lens.",
    )
    grid: list[PositionLens] | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="The lens at every requested position (config.positions), in prompt order; "
        "absent for positions 'last', whose lens is the fields above.",
    )
