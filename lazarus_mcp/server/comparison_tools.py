"""The inputs and descriptions of the ``attribute`` and ``compare`` tools.

They map onto the core's configs exactly as ``lazarus introspect attribute`` and ``lazarus
introspect compare`` map their options, so the same arguments give the same result.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lazarus_mcp.lens.layers import choose_strategy
from lazarus_mcp.schema import AnalysisConfig, AttributionConfig, LayerStrategy
from lazarus_mcp.server.tools import _LAYERS, _MODEL, _PROMPT, _RAW, _Input


class _LayerOptions(_Input):
    layer_strategy: LayerStrategy | None = Field(
        None,
        description="Which blocks to read: 'all'; 'evenly_spaced' (blocks 0, layer_step, ... plus "
        "the last); 'first_last'; 'custom' (the blocks in layers). Default: 'custom' when layers "
        "is given, else 'all'.",
    )
    layer_step: int = Field(4, ge=1, description="Spacing for 'evenly_spaced'.")
    layers: list[int] | None = Field(
        None, min_length=1, description=f"Blocks for 'custom'. {_LAYERS}"
    )
    top_k: int = Field(5, ge=1, le=100, description="Top tokens listed per layer.")
    raw: bool = Field(False, description=_RAW)

    def _strategy(self) -> LayerStrategy:
        # Attribution and comparison are about depth: every block unless asked otherwise.
        chosen = choose_strategy(self.layer_strategy, self.layers)
        explicit = self.layer_strategy is not None or self.layers
        return chosen if explicit else LayerStrategy.ALL


class AttributeInput(_LayerOptions):
    model: str = Field(min_length=1, description=_MODEL)
    prompt: str = Field(min_length=1, description=_PROMPT)
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
        return AttributionConfig(
            layer_strategy=self._strategy(),
            layer_step=self.layer_step,
            custom_layers=self.layers,
            top_k=self.top_k,
            track_tokens=self.targets,
            use_chat_template=not self.raw,
            foil=self.foil,
        )


class CompareInput(_LayerOptions):
    model: str = Field(min_length=1, description=_MODEL)
    prompt: str = Field(min_length=1, description=_PROMPT)
    prompt_b: str | None = Field(
        None, min_length=1, description="Run B's prompt on the same model (a counterfactual)."
    )
    model_b: str | None = Field(
        None,
        min_length=1,
        description="Run B's model on the same prompt: one sharing the vocabulary (the same ids "
        "for the same strings), e.g. a quantized copy of the model.",
    )
    track_tokens: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Tokens whose probability and rank to show on both sides at every layer.",
    )

    @model_validator(mode="after")
    def _one_second_run(self) -> CompareInput:
        if (self.prompt_b is None) == (self.model_b is None):
            raise ValueError("give exactly one of prompt_b (same model) or model_b (same prompt)")
        return self

    def config(self) -> AnalysisConfig:
        return AnalysisConfig(
            layer_strategy=self._strategy(),
            layer_step=self.layer_step,
            custom_layers=self.layers,
            top_k=self.top_k,
            track_tokens=self.track_tokens,
            use_chat_template=not self.raw,
        )


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
