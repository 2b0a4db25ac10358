"""The inputs and descriptions of the ``attribute`` and ``compare`` tools.

They map onto the core's configs exactly as ``lazarus introspect attribute`` and ``lazarus
introspect compare`` map their options, so the same arguments give the same result.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lazarus_mcp.lens.layers import Config, layer_config
from lazarus_mcp.schema import AnalysisConfig, AttributionConfig
from lazarus_mcp.server.fields import (
    EveryStrategyField,
    Input,
    LayersField,
    LayerStepField,
    LensField,
    ModelField,
    PromptField,
    RawField,
    TopKField,
)


class _DepthOptions(Input):
    """The layer options of the calls about depth: every block unless asked otherwise."""

    layer_strategy: EveryStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    raw: RawField = False
    lens: LensField = "logit"

    def _layer_config(self, tokens: list[str], config_type: type[Config], **extra: Any) -> Config:
        return layer_config(
            config_type,
            self.layer_strategy,
            self.layers,
            every_by_default=True,
            layer_step=self.layer_step,
            top_k=self.top_k,
            track_tokens=tokens,
            use_chat_template=not self.raw,
            lens=self.lens,
            **extra,
        )


class AttributeInput(_DepthOptions):
    model: ModelField
    prompt: PromptField
    targets: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Tokens to attribute, spelled as the model spells them (' Paris' with its "
        "leading space); default: the model's own top-1. A string of several tokens attributes "
        "its first token.",
    )
    foil: str | None = Field(
        None,
        description="A contrasting token (' Berlin'): logit_diffs gives, per component, the first "
        "target's logit minus the foil's.",
    )

    def config(self) -> AttributionConfig:
        return self._layer_config(self.targets, AttributionConfig, foil=self.foil)


class CompareInput(_DepthOptions):
    model: ModelField
    prompt: PromptField
    prompt_b: str | None = Field(
        None, min_length=1, description="Run B's prompt on the same model (a counterfactual)."
    )
    model_b: str | None = Field(
        None,
        min_length=1,
        description="Run B's model on the same prompt: one sharing the vocabulary (the same ids "
        "for the same strings), e.g. a quantized copy of the model.",
    )
    lens_b: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="Run B: the same model and prompt read through this lens (a tuned or "
        "Jacobian lens directory under the server's --lens-dir, or 'logit'): where two lenses "
        "disagree.",
    )
    track_tokens: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Tokens whose probability and rank to show on both sides at every layer.",
    )

    @model_validator(mode="after")
    def _one_second_run(self) -> CompareInput:
        if sum(x is not None for x in (self.prompt_b, self.model_b, self.lens_b)) != 1:
            raise ValueError(
                "give exactly one of prompt_b (same model) or model_b (same prompt) or lens_b"
            )
        return self

    def config(self) -> AnalysisConfig:
        return self._layer_config(self.track_tokens, AnalysisConfig)


ATTRIBUTE_DOC = """\
Which block, and which sub-layer (attention or MLP), wrote a token's logit at the prompt's last \
position: direct logit attribution (components: the embedding, every block's attention and MLP \
additions, each through the final norm and unembedding; they sum to the model's own pre-cap \
logit, stated beside it), optionally against a foil token (logit_diffs), plus the lens after \
each block's attention sub-layer next to the lens after the whole block, with the targets' \
probability and rank at both. Targets default to the model's top-1. Read milestones first. \
Same JSON as `lazarus introspect attribute --json`."""

COMPARE_DOC = """\
Two runs' logit lenses side by side, layer by layer: the same model on two prompts (prompt_b: a \
counterfactual), or one prompt on two models sharing a vocabulary (model_b: e.g. a 4-bit copy \
against its original). Per layer: Jensen-Shannon divergence and KL both ways (nats), each side's \
top-1, tracked tokens on both sides; divergence_layer, the first layer from which the top-1 \
tokens differ for good; each side's final prediction, milestones and fidelity. Same JSON as \
`lazarus introspect compare --json`."""
