"""``attribute`` and ``compare``: the calls about depth (every block unless asked otherwise).

Their inputs map onto the core's configs as the commands built from them do, so the same
arguments give the same result through any interface. Targets, the foil and tracked strings are
bounded by the gate's one table (``runtime/limits.py``), as every tool's are.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from lazarus_mcp.lens.layers import Config
from lazarus_mcp.runtime.gate import Request
from lazarus_mcp.schema import (
    AnalysisConfig,
    AttributionConfig,
    AttributionResult,
    CompareResult,
)
from lazarus_mcp.tools.fields import (
    EveryStrategyField,
    LayersField,
    LayerStepField,
    LensField,
    ModelField,
    PromptField,
    RawField,
    TopKField,
    options_config,
)
from lazarus_mcp.tools.spec import Cli, Input, Session, ToolSpec
from lazarus_mcp.tools.text import attribution_lines, compare_lines


class _DepthOptions(Input):
    """The layer options of the calls about depth: every block unless asked otherwise."""

    layer_strategy: EveryStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    raw: RawField = False
    lens: LensField = "logit"

    def _layer_config(self, tokens: list[str], config_type: type[Config], **extra: Any) -> Config:
        return options_config(self, config_type, tokens, every_by_default=True, **extra)


class AttributeInput(_DepthOptions):
    model: ModelField
    prompt: PromptField
    targets: Annotated[
        list[str],
        Field(
            default_factory=list,
            json_schema_extra={"maxItems": 16},
            description="Tokens to attribute, spelled as the model spells them (' Paris' with its "
            "leading space); default: the model's own top-1. A string of several tokens "
            "attributes its first token.",
        ),
        Cli(("-t", "--target"), "Token to attribute (repeatable; default: top-1)."),
    ]
    foil: Annotated[
        str | None,
        Field(
            description="A contrasting token (' Berlin'): logit_diffs gives, per component, the "
            "first target's logit minus the foil's.",
        ),
        Cli(help="Contrast token: target minus foil per component."),
    ] = None

    def config(self) -> AttributionConfig:
        return self._layer_config(self.targets, AttributionConfig, foil=self.foil)

    def request(self) -> Request:
        return Request("attribute", [self.prompt], self.config())


class CompareInput(_DepthOptions):
    model: ModelField
    prompt: PromptField
    prompt_b: Annotated[
        str | None,
        Field(min_length=1, description="Run B's prompt on the same model (a counterfactual)."),
        Cli(help="Run B: this prompt on the same model."),
    ] = None
    model_b: Annotated[
        str | None,
        Field(
            min_length=1,
            description="Run B's model on the same prompt: one sharing the vocabulary (the same "
            "ids for the same strings), e.g. a quantized copy of the model.",
        ),
        Cli(help="Run B: the same prompt on this model (same vocabulary)."),
    ] = None
    lens_b: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=1000,
            description="Run B: the same model and prompt read through this lens (a tuned or "
            "Jacobian lens directory under the server's --lens-dir, or 'logit'): where two "
            "lenses disagree.",
        ),
        Cli(("--lens-b",), "Run B: the same prompt and model through this lens."),
    ] = None
    track_tokens: Annotated[
        list[str],
        Field(
            default_factory=list,
            json_schema_extra={"maxItems": 32},
            description="Tokens whose probability and rank to show on both sides at every layer.",
        ),
        Cli(("-t", "--track"), "Token to show on both sides (repeatable)."),
    ]

    @model_validator(mode="after")
    def _one_second_run(self) -> CompareInput:
        if sum(x is not None for x in (self.prompt_b, self.model_b, self.lens_b)) != 1:
            raise ValueError(
                "give exactly one of prompt_b (same model), model_b (same prompt) or lens_b "
                "(same run, another lens)"
            )
        return self

    def config(self) -> AnalysisConfig:
        return self._layer_config(self.track_tokens, AnalysisConfig)

    def request(self) -> Request:
        return Request("compare", [self.prompt, self.prompt_b or self.prompt], self.config())


ATTRIBUTE_DOC = """\
Which block, and which sub-layer (attention or MLP), wrote a token's logit at the prompt's last \
position: direct logit attribution (components: the embedding, every block's attention and MLP \
additions, each through the final norm and unembedding; they sum to the model's own pre-cap \
logit, stated beside it), optionally against a foil token (logit_diffs); block_attributions \
splits the lens's reading of each earlier captured block the same way (a tuned or Jacobian \
lens's map applied to each component); plus the lens after each block's attention sub-layer \
next to the lens after the whole block, with the targets' probability and rank at both. \
Targets default to the model's top-1. Read milestones first. Same JSON as `lazarus introspect \
attribute --json`."""

COMPARE_DOC = """\
Two runs' logit lenses side by side, layer by layer: the same model on two prompts (prompt_b: a \
counterfactual), one prompt on two models sharing a vocabulary (model_b: e.g. a 4-bit copy \
against its original), or one run read through two lenses (lens_b: where a tuned or Jacobian \
lens and the logit lens disagree). Per layer: Jensen-Shannon divergence and KL both ways \
(nats), each side's top-1, tracked tokens on both sides; divergence_layer, the first layer from \
which the top-1 tokens differ for good; each side's final prediction, milestones, fidelity and \
lens. Same JSON as `lazarus introspect compare --json`."""


async def attribute(session: Session, params: AttributeInput) -> AttributionResult:
    analyzer = await session.open(params.model)
    return await session.step("attributing", analyzer.attribute(params.prompt, params.config()))


async def compare(session: Session, params: CompareInput) -> CompareResult:
    analyzer = await session.open(params.model)
    other = await session.open(params.model_b) if params.model_b else None
    job = analyzer.compare(
        params.prompt, params.config(), prompt_b=params.prompt_b, other=other, lens_b=params.lens_b
    )
    return await session.step("comparing", job)


ATTRIBUTE = ToolSpec(
    name="attribute",
    example={"model": "demo", "prompt": "The capital of France is", "raw": True},
    doc=ATTRIBUTE_DOC,
    inputs=AttributeInput,
    result=AttributionResult,
    run=attribute,
    render=lambda result: "\n".join(attribution_lines(result)),
)
COMPARE = ToolSpec(
    name="compare",
    example={
        "model": "demo",
        "prompt": "The capital of France is",
        "prompt_b": "The capital of Italy is",
        "raw": True,
    },
    doc=COMPARE_DOC,
    inputs=CompareInput,
    result=CompareResult,
    run=compare,
    render=lambda result: "\n".join(compare_lines(result)),
    steps=3,
)
