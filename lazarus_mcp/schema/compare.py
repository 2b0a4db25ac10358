"""The comparison contract: two runs' lenses side by side (two prompts, or two models)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lazarus_mcp.schema.analysis import (
    AnalysisConfig,
    LensUsed,
    TokenProbability,
)
from lazarus_mcp.schema.attribution import TrackedProbability
from lazarus_mcp.schema.fidelity import Fidelity, Milestones
from lazarus_mcp.schema.prompt import PromptRun


class CompareSide(PromptRun):
    """One run: what it saw and what it finally predicted."""

    final_prediction: list[TokenProbability]
    fidelity: Fidelity
    milestones: Milestones
    lens: LensUsed = Field(
        default_factory=LensUsed,
        description="The lens this side's blocks were read through.",
    )


class CompareLayer(BaseModel):
    """Both runs' lenses at one block."""

    layer_idx: int
    js_divergence: float = Field(
        description="Jensen-Shannon divergence in nats: (KL(A||M) + KL(B||M)) / 2, M = (A+B)/2."
    )
    kl_a_b: float = Field(description="KL(A || B) in nats.")
    kl_b_a: float = Field(description="KL(B || A) in nats.")
    top_a: TokenProbability
    top_b: TokenProbability
    tracked_a: list[TrackedProbability]
    tracked_b: list[TrackedProbability]


class CompareResult(BaseModel):
    """Where in depth two runs' predictions part."""

    a: CompareSide
    b: CompareSide
    config: AnalysisConfig
    captured_layers: list[int]
    layers: list[CompareLayer]
    final_js_divergence: float = Field(description="JS divergence of the two final outputs, nats.")
    divergence_layer: int | None = Field(
        description="First captured layer from which the two top-1 tokens differ at every later "
        "captured layer; null if they agree at the last one."
    )
