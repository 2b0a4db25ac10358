"""``analyze`` and ``track_tokens``: the logit lens of a prompt (or a batch), as one tool spec each.

Inputs map onto the core's :class:`AnalysisConfig` the way ``lazarus introspect analyze`` maps its
options (the command is built from the same input model), so the same arguments give the same
result through either interface. ``analyze`` returns :class:`AnalysisResult` itself (or an
:class:`AnalysisBatch` for ``prompts``); ``track_tokens`` a thin view of one. The short text
renderings are for clients that read only a tool's text content, and for people.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from lazarus_mcp.lens.layers import layer_config
from lazarus_mcp.lens.positions import parse_positions
from lazarus_mcp.plots.grid import Metric
from lazarus_mcp.runtime.gate import Request
from lazarus_mcp.schema import (
    AnalysisBatch,
    AnalysisConfig,
    AnalysisResult,
    Fidelity,
    LensUsed,
    Milestones,
    TokenEvolution,
)
from lazarus_mcp.tools.fields import (
    LAYERS_HELP,
    PROMPT_HELP,
    LayersField,
    LayerStepField,
    LensField,
    ModelField,
    PromptField,
    RawField,
    SampledStrategyField,
    TopKField,
    options_config,
    parse_int_list,
)
from lazarus_mcp.tools.spec import Cli, Input, Session, ToolSpec
from lazarus_mcp.tools.text import render_analysis, render_batch, render_evolutions

TRACKED_HELP = (
    "spelled as the model spells them: ' Paris' (leading space) is the word after a space, "
    "'Paris' the word at the start of a text."
)


class AnalyzeInput(Input):
    model: ModelField
    prompt: Annotated[
        str | None,
        Field(min_length=1, description=f"{PROMPT_HELP} Give prompt or prompts, not both."),
        Cli(hidden=True),  # the command's repeatable -p gives prompt or prompts
    ] = None
    prompts: Annotated[
        list[str] | None,
        Field(
            min_length=1,
            json_schema_extra={"maxItems": 256},
            description="Several texts to analyze together (one padded forward pass per group "
            "of similar length); the result is {results: [one analysis per prompt, in order]}.",
        ),
        Cli(hidden=True),
    ] = None
    layer_strategy: SampledStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    track_tokens: Annotated[
        list[str],
        Field(
            default_factory=list,
            json_schema_extra={"maxItems": 32},
            description="Tokens whose probability and rank to follow across the layers, "
            f"{TRACKED_HELP} A string of several tokens tracks its first token.",
        ),
        Cli(("-t", "--track"), "Token to follow across layers (repeatable)."),
    ]
    raw: RawField = False
    embedding_scale: Annotated[
        float | None,
        Field(
            gt=0,
            description="Replace the model's own embedding scale (Gemma: sqrt(hidden_size)) for "
            "this call, to study its effect; null uses the model's.",
        ),
        Cli(help="Replace the model's embedding scale for this run."),
    ] = None
    positions: Annotated[
        Literal["last", "all"] | list[StrictInt],
        Field(
            description="Prompt positions to read: 'last' (the next-token prediction), 'all' (the "
            "whole grid: what every layer predicts at every position, in result.grid), or "
            "indices such as [0, 3, -1] (negative from the end).",
        ),
        Cli(help="Positions to read: last, all, or indices such as 0,3,-1.", parse=parse_positions),
    ] = "last"
    include_embeddings: Annotated[
        bool,
        Field(description="Add a row for the embedding output (layer_idx null), before block 0."),
        Cli(help="Add a row for the embedding output."),
    ] = False
    lens: LensField = "logit"
    plot: Annotated[
        bool,
        Field(
            description="Also return the layers x positions heatmap as a PNG image content block "
            "(each cell: the top token, coloured by plot_metric). Use with positions 'all'.",
        ),
        Cli(hidden=True),  # the command draws files: --plot PATH
    ] = False
    plot_metric: Annotated[
        Metric,
        Field(
            description="Heatmap colour: probability (of the top token), entropy, kl, or rank (of "
            "the first track_tokens entry).",
        ),
        Cli(help="Cell colour: probability, entropy, kl, or rank (of --track)."),
    ] = Metric.probability

    @model_validator(mode="after")
    def _one_prompt_field(self) -> AnalyzeInput:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError(
                "missing required argument 'prompt' (a text) or 'prompts' (a list of texts)"
                if self.prompt is None
                else "give 'prompt' or 'prompts', not both"
            )
        if self.plot and self.plot_metric is Metric.rank and not self.track_tokens:
            raise ValueError("plot_metric 'rank' needs a tracked token in track_tokens")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.prompt] if self.prompt is not None else list(self.prompts or [])

    def config(self) -> AnalysisConfig:
        """The core's config, chosen exactly as ``lazarus introspect analyze`` chooses it."""
        return options_config(
            self,
            AnalysisConfig,
            self.track_tokens,
            embedding_scale=self.embedding_scale,
            positions=self.positions,
            include_embeddings=self.include_embeddings,
        )

    def request(self) -> Request:
        return Request("lens", self.texts, self.config(), plot=self.plot)


class TrackTokensInput(Input):
    model: ModelField
    prompt: PromptField
    tokens: Annotated[
        list[str],
        Field(
            min_length=1,
            json_schema_extra={"maxItems": 32},
            description=f"The tokens to follow, {TRACKED_HELP} A string of several tokens tracks "
            "its first token (the result says so).",
        ),
        Cli(("-t", "--token"), "Token to follow (repeatable)."),
    ]
    layers: Annotated[
        list[StrictInt] | None,
        Field(min_length=1, description=f"Blocks to read; default every block. {LAYERS_HELP}"),
        Cli(("--layers",), "Blocks, e.g. 0,4,-1 (default every block).", parse_int_list),
    ] = None
    raw: RawField = False
    lens: LensField = "logit"

    def config(self) -> AnalysisConfig:
        return layer_config(
            AnalysisConfig,
            None,
            self.layers,
            every_by_default=True,
            top_k=1,
            track_tokens=self.tokens,
            use_chat_template=not self.raw,
            lens=self.lens,
        )

    def request(self) -> Request:
        return Request("lens", [self.prompt], self.config())


class TokenTracking(BaseModel):
    """The token-evolution part of an analysis."""

    model_id: str
    prompt: str
    text_seen: str = Field(description="The text that was tokenized (after the chat template).")
    chat_template_applied: bool
    tokens: list[str] = Field(description="The prompt's tokens as the model sees them.")
    captured_layers: list[int]
    token_evolutions: list[TokenEvolution] = Field(
        description="One entry per requested token, in order: its probability and 1-based rank "
        "at each captured layer, at the final output, and the first layer where it ranks 1."
    )
    fidelity: Fidelity
    milestones: Milestones
    lens: LensUsed = Field(
        default_factory=LensUsed,
        description="The lens every block was read through.",
    )

    @classmethod
    def of(cls, result: AnalysisResult) -> TokenTracking:
        return cls(
            model_id=result.model.model_id,
            prompt=result.prompt,
            text_seen=result.text_seen,
            chat_template_applied=result.chat_template_applied,
            tokens=result.tokens,
            captured_layers=result.captured_layers,
            token_evolutions=result.token_evolutions,
            fidelity=result.fidelity,
            milestones=result.milestones,
            lens=result.lens,
        )


# What each tool answers, for the agent choosing one.

ANALYZE_DOC = """\
The logit lens of a prompt: for each selected block (layer), the tokens the model would predict \
next if it stopped there, with probabilities, entropy and the KL divergence from the final \
output; the model's own final prediction; and, for track_tokens, each token's probability and \
rank at every captured layer with the first layer where it ranks 1 (emergence_layer). Use it to \
see at what depth an answer forms, where the model changes its mind, or how a chat template \
changes the prediction. The result is the same JSON as `lazarus introspect analyze -o`. For \
tokens alone at every layer use track_tokens (smaller output)."""

TRACK_DOC = """\
How the probability and rank of given tokens evolve across the layers for a prompt (every block \
by default): per token, its probability and 1-based rank over the whole vocabulary at each \
layer, at the final output, and emergence_layer, the first layer where it ranks 1 (null if \
never). Use it to compare candidates (a right and a wrong answer) or find where a token wins."""


# The core functions ----------------------------------------------------------------------------


async def analyze(session: Session, params: AnalyzeInput) -> AnalysisResult | AnalysisBatch:
    analyzer = await session.open(params.model)
    config = params.config()
    if params.prompt is not None:
        job = analyzer.analyze(params.prompt, config, plot=params.plot)
        return await session.step("running the logit lens", job)
    texts = params.texts

    async def report(done: int, total: int) -> None:
        await session.report(1 + done / max(1, total), f"analyzed {done} of {total} prompts")

    job_b = analyzer.analyze_batch(texts, config, on_progress=report, plot=params.plot)
    return AnalysisBatch(results=await session.step("running the logit lens", job_b))


async def track_tokens(session: Session, params: TrackTokensInput) -> TokenTracking:
    analyzer = await session.open(params.model)
    result = await session.step(
        "running the logit lens", analyzer.analyze(params.prompt, params.config())
    )
    return TokenTracking.of(result)


def heatmaps(params: AnalyzeInput, out: AnalysisResult | AnalysisBatch) -> list[bytes]:
    """PNG heatmaps for MCP's image content, when asked (``plot``)."""
    if not params.plot:
        return []
    from lazarus_mcp.plots import render_heatmap

    results = out.results if isinstance(out, AnalysisBatch) else [out]
    return [render_heatmap(r, "png", params.plot_metric) for r in results]


def analyze_output_schema() -> dict[str, Any]:
    """One result or a batch: MCP wants one object schema, so the single result's fields with
    the batch as the other branch of an ``anyOf``."""
    from lazarus_mcp.tools.spec import lean_output_schema

    single = lean_output_schema(AnalysisResult)
    return {
        **single,
        "description": f"{single.get('description', '')} With 'prompts': "
        "{results: [one such result per prompt, in order]}.",
        "required": [],
        "anyOf": [
            {"required": single.get("required", [])},
            {"properties": {"results": {"type": "array"}}, "required": ["results"]},
        ],
    }


def render_output(out: AnalysisResult | AnalysisBatch) -> str:
    return render_batch(out) if isinstance(out, AnalysisBatch) else render_analysis(out)


def render_tracking(tracking: TokenTracking) -> str:
    head = f"{tracking.model_id}: layers {tracking.captured_layers}"
    return "\n".join([head, *render_evolutions(tracking.token_evolutions)])


ANALYZE = ToolSpec(
    name="analyze",
    example={"model": "demo", "prompt": "The capital of France is", "raw": True},
    doc=ANALYZE_DOC,
    inputs=AnalyzeInput,
    result=AnalysisResult | AnalysisBatch,
    run=analyze,
    render=render_output,
    output_schema=analyze_output_schema,
    images=heatmaps,
)
TRACK_TOKENS = ToolSpec(
    name="track_tokens",
    example={"model": "demo", "prompt": "The capital of France is", "tokens": [" Paris"]},
    doc=TRACK_DOC,
    inputs=TrackTokensInput,
    result=TokenTracking,
    run=track_tokens,
    render=render_tracking,
)
