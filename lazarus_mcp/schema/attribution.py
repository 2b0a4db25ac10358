"""The attribution contract: which sub-layer wrote a logit, and the lens between sub-layers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from lazarus_mcp.schema.analysis import (
    AnalysisConfig,
    LayerPrediction,
    LensUsed,
    TokenProbability,
)
from lazarus_mcp.schema.fidelity import Fidelity, Milestones
from lazarus_mcp.schema.prompt import PromptRun


class AttributionConfig(AnalysisConfig):
    """An analysis config whose ``track_tokens`` are the attribution targets (default: the
    model's own top-1), plus an optional foil."""

    foil: str | None = Field(
        None,
        description="A token to contrast with the first target: per component, the "
        "target's logit minus the foil's.",
    )


class AttributionTarget(BaseModel):
    token: str
    token_id: int
    query: str | None = Field(description="The string asked for; null for the default target.")
    logit: float = Field(description="The model's final logit (after any soft-cap).")
    logit_precap: float = Field(
        description="The model's own logit before soft-capping (after any logit scaling): what "
        "the components sum to."
    )
    probability: float
    component_sum: float = Field(description="The sum of the components' logits for this token.")


class AttributionComponent(BaseModel):
    kind: Literal["embedding", "attention", "mlp", "bias", "lens_bias"]
    layer_idx: int | None = Field(
        description="The block; null for the embedding and the final norm's bias; for "
        "lens_bias (a tuned lens's translator bias) the block whose translator it is."
    )
    logits: list[float] = Field(description="Direct contribution to each target's logit.")


class BlockAttribution(BaseModel):
    """Direct logit attribution of the lens's reading of one block before the last: that
    block's residual (the embedding plus the additions of blocks 0..layer_idx), each component
    through the lens's linear map, a tuned lens's bias one more component, then the final norm
    (its scale fixed by the whole mapped residual) and the unembedding."""

    layer_idx: int
    logits: list[float] = Field(
        description="Each target's logit under the lens at this block, before any soft-cap: "
        "what the components sum to."
    )
    components: list[AttributionComponent]


class TrackedProbability(TokenProbability):
    rank: int = Field(description="1-based rank over the whole vocabulary.")


class _TrackedLayerPrediction(LayerPrediction):
    tracked: list[TrackedProbability]


class SublayerPrediction(_TrackedLayerPrediction):
    """The lens of the residual stream after block layer_idx's attention sub-layer (before its
    MLP), with the targets' (and foil's) probability and rank there."""


class BlockPrediction(_TrackedLayerPrediction):
    """The lens after the whole block, with the targets' (and foil's) probability and rank."""


class AttributionResult(PromptRun):
    """Direct logit attribution and the sub-layer lens at the prompt's last position."""

    config: AttributionConfig
    targets: list[AttributionTarget]
    foil: AttributionTarget | None
    components: list[AttributionComponent] = Field(
        description="The embedding output (as it enters block 0), then per block its attention "
        "and MLP additions, then the final norm's bias where it has one: "
        "(centre(x) / s) . (g * W_U[t]) each, s the final norm's scale of the final residual."
    )
    logit_diffs: list[float] | None = Field(
        description="With a foil: per component, first target's logit minus the foil's."
    )
    captured_layers: list[int]
    sublayer_predictions: list[SublayerPrediction]
    layer_predictions: list[BlockPrediction]
    final_prediction: list[TokenProbability]
    fidelity: Fidelity
    milestones: Milestones
    block_attributions: list[BlockAttribution] = Field(
        description="The same decomposition of the lens's reading of every captured block "
        "before the last (under the logit lens too); block N-1 is 'components'. Empty when "
        "the model is split over processes (--shards): its ranks hold the earlier blocks' "
        "components."
    )
    lens: LensUsed = Field(
        default_factory=LensUsed,
        description="The lens the sub-layer and block rows and block_attributions were read "
        "through. 'components' decompose the model's own output (block N-1), which every lens "
        "reads as is.",
    )
