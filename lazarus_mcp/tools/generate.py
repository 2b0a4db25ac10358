"""``generate``: the model writes, and the lens is read at every token it writes.

Declared once: the MCP tool (a progress note per token, a PNG heatmap with ``plot``), the
command ``lazarus introspect generate`` (``lazarus_cli/generate_extras.py`` adds ``--plot FILE``)
and ``introspection.call_tool("generate", ...)``. The arguments map onto
:class:`GenerationConfig` the same way through every interface; the gate (kind ``generate``)
bounds max_new_tokens x layers x top_k before any work.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lazarus_mcp.plots.grid import Metric
from lazarus_mcp.runtime.gate import Request
from lazarus_mcp.schema.generation import (
    MAX_NEW_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    GenerationConfig,
    GenerationResult,
    GenerationStep,
)
from lazarus_mcp.tools.fields import (
    LayersField,
    LayerStepField,
    LensField,
    ModelField,
    RawField,
    SampledStrategyField,
    TopKField,
    options_config,
)
from lazarus_mcp.tools.spec import Cli, Input, Session, ToolSpec
from lazarus_mcp.tools.timeline import render_generation

GENERATE_DOC = """\
Let the model write a continuation of the prompt (greedy by default) and read the lens (logit, \
or a tuned or Jacobian lens directory) at every token it writes: for each generated token, what \
each selected layer predicted at the position that emitted it, the token's final probability \
and rank, decided_layer (the block from which it stayed top-1) and the tracked tokens. \
milestones says, per tracked token, the step and layer where it first led and where the output \
led with it. Use it to see when a model decides its answer, or inside a chain of thought. One \
forward per token over the KV cache; \
progress is reported per token. Same JSON as `lazarus introspect generate --json`."""


class GenerateInput(Input):
    model: ModelField
    prompt: Annotated[
        str,
        Field(
            min_length=1,
            description="The text to continue (wrapped in the chat template as one user message "
            "plus the assistant turn's opening, unless raw).",
        ),
        Cli(("-p", "--prompt"), "The text to continue."),
    ]
    max_new_tokens: Annotated[
        int,
        Field(ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate at most."),
        Cli(("-n", "--max-new-tokens"), "Tokens to generate at most."),
    ] = 32
    temperature: Annotated[
        float,
        Field(ge=0.0, le=100.0, description="0: greedy (default); above 0: sampled."),
        Cli(help="0: greedy (default); above 0: sampled."),
    ] = 0.0
    top_p: Annotated[
        float,
        Field(gt=0.0, le=1.0, description="Nucleus sampling mass (with temperature > 0)."),
        Cli(help="Nucleus sampling mass."),
    ] = 1.0
    seed: Annotated[
        int | None,
        Field(
            ge=0,
            lt=2**63,
            description="Sampler seed: the same seed and arguments give the same tokens; null "
            "draws one (recorded in the result's seed).",
        ),
        Cli(help="Sampler seed (the same seed, the same tokens)."),
    ] = None
    stop: Annotated[
        list[str],
        Field(
            default_factory=list,
            max_length=MAX_STOP_STRINGS,
            description=f"Strings (each up to {MAX_STOP_CHARS} characters) that end the "
            "generation when the text contains one; the text is cut before it. End-of-sequence "
            "tokens always stop it.",
        ),
        Cli(("--stop",), "End when the text contains this string (repeatable)."),
    ]
    layer_strategy: SampledStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    track_tokens: Annotated[
        list[str],
        Field(
            default_factory=list,
            json_schema_extra={"maxItems": 32},
            description="Tokens to follow at every step, spelled as the model spells them "
            "(' Paris' with its leading space); a string of several tokens tracks its first.",
        ),
        Cli(("-t", "--track"), "Token to follow at every step (repeatable)."),
    ]
    raw: RawField = False
    lens: LensField = "logit"
    plot: Annotated[
        bool,
        Field(
            description="Also return the layers x generated-tokens heatmap as a PNG image (each "
            "cell: the layer's top prediction, coloured by plot_metric)."
        ),
        Cli(hidden=True),  # the command draws a file: --plot PATH
    ] = False
    plot_metric: Annotated[
        Metric,
        Field(
            description="Heatmap colour: probability (of the top token), entropy, kl, or rank "
            "(of the token the model wrote)."
        ),
        Cli(help="Cell colour: probability, entropy, kl, or rank (of the written token)."),
    ] = Metric.probability

    def config(self) -> GenerationConfig:
        """The core's config, the same from every interface."""
        return options_config(
            self,
            GenerationConfig,
            self.track_tokens,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
        )

    def request(self) -> Request:
        return Request("generate", [self.prompt], self.config(), plot=self.plot)


async def generate(session: Session, params: GenerateInput) -> GenerationResult:
    analyzer = await session.open(params.model)

    share = 1 / (params.max_new_tokens + 1)  # of the second step: the prompt, then each token

    async def on_step(step: GenerationStep) -> None:
        await session.report(1 + (step.step + 1) * share, f"token {step.step + 1}: {step.token!r}")

    # Not a step with a heartbeat: the notes per token are the heartbeat, and progress only grows.
    await session.report(1, "reading the prompt")
    return await analyzer.generate(
        params.prompt, params.config(), on_step=on_step, plot=params.plot
    )


def heatmap(params: GenerateInput, result: GenerationResult) -> list[bytes]:
    """The PNG heatmap for MCP's image content, when asked (``plot``)."""
    if not params.plot:
        return []
    from lazarus_mcp.plots.generation import render_generation_heatmap

    return [render_generation_heatmap(result, "png", params.plot_metric)]


GENERATE = ToolSpec(
    name="generate",
    example={
        "model": "demo",
        "prompt": "The capital of France is",
        "raw": True,
        "max_new_tokens": 4,
    },
    doc=GENERATE_DOC,
    inputs=GenerateInput,
    result=GenerationResult,
    run=generate,
    render=render_generation,
    images=heatmap,
)
