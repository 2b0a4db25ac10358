"""Input fields the tools share, with their command-line spelling.

``analyze``, ``track_tokens``, ``attribute`` and ``compare`` take the same model, prompt, layer
and template options; defining each field once keeps their JSON schemas (what an agent reads)
and their ``lazarus`` options from drifting apart. The core's
:func:`~lazarus_mcp.lens.layers.layer_config` turns their layer options into a config, so a tool
call and a command with the same options choose the same blocks. Integers are strict: ``"0"``
and ``true`` are not layers or positions (pydantic's lax mode made them 0 and 1).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import Field, StrictInt

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.layers import Config, layer_config
from lazarus_mcp.schema import LayerStrategy
from lazarus_mcp.tools.spec import Cli

MODEL_HELP = (
    "The model: a local Hugging Face checkpoint directory, a GGUF file (or a directory holding "
    "one), a Hugging Face id such as "
    "'Qwen/Qwen3-0.6B' (the local cache first), or 'demo'. Spell it the same on every call: a "
    "loaded model is found by this exact string."
)
PROMPT_HELP = (
    "The text to analyze; the lens reads the prediction of the token after its last token (after "
    "the chat template, unless raw)."
)
RAW_HELP = (
    "false (default): the prompt as a user message in the model's chat template (a chat model "
    "answering a question). true: the text as given, with the tokenizer's BOS (a completion such "
    "as 'The capital of France is'). Models without a template always see the text as given."
)
LAYERS_HELP = (
    "Block indices, 0-based; negative ones count from the end (-1 = the last block, whose lens is "
    "the model's own output)."
)


def _strategy_help(default: str) -> str:
    return (
        "Which blocks to read: 'all'; 'evenly_spaced' (blocks 0, layer_step, "
        "2*layer_step, ... plus the last); 'first_last'; 'custom' (the blocks in layers). "
        f"Default: 'custom' when layers is given, else '{default}'."
    )


def parse_int_list(text: str) -> list[int]:
    """``'0,4,-1'`` -> ``[0, 4, -1]`` (the command line's spelling of a list of integers)."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InvalidRequestError(
            f"takes comma-separated integers such as 0,4,-1, not {text[:100]!r}"
        ) from None
    if not values:
        raise InvalidRequestError("is empty: give integers such as 0,4,-1")
    return values


ModelField = Annotated[
    str,
    Field(min_length=1, description=MODEL_HELP),
    Cli(("-m", "--model"), "Local directory, Hugging Face id, or 'demo'."),
]
PromptField = Annotated[
    str, Field(min_length=1, description=PROMPT_HELP), Cli(("-p", "--prompt"), "The text.")
]
RawField = Annotated[bool, Field(description=RAW_HELP), Cli(help="Do not apply the chat template.")]
LayerStepField = Annotated[
    int,
    Field(ge=1, description="Spacing for 'evenly_spaced'."),
    Cli(("-s", "--layer-step"), "Spacing for evenly_spaced."),
]
LayersField = Annotated[
    list[StrictInt] | None,
    Field(min_length=1, description=f"Blocks for 'custom'. {LAYERS_HELP}"),
    Cli(("--layers", "--custom-layers"), "Blocks, e.g. 0,4,-1 (-1 = last).", parse_int_list),
]
TopKField = Annotated[
    int,
    # The cap (100) is the gate's (runtime/limits.py max_top_k), which a command can raise.
    Field(
        ge=1,
        json_schema_extra={"maximum": 100},
        description="How many of the most likely next tokens to list per layer.",
    ),
    Cli(help="Top tokens per layer."),
]
# analyze samples the depth; attribute and compare are about depth, so they read every block.
SampledStrategyField = Annotated[
    LayerStrategy | None,
    Field(description=_strategy_help("evenly_spaced")),
    Cli(help="Which blocks (default evenly_spaced)."),
]
EveryStrategyField = Annotated[
    LayerStrategy | None,
    Field(description=_strategy_help("all")),
    Cli(help="Which blocks (default all)."),
]
LensField = Annotated[
    str,
    # The same bound as AnalysisConfig.lens: a path, not a payload.
    Field(
        min_length=1,
        max_length=1000,
        description="'logit' (the model's own head on every block), or a tuned or Jacobian lens "
        "directory made for this model, relative to the server's --lens-dir (lenses read the "
        "early blocks far better; the result's 'lens' says which was read and its held-out fit).",
    ),
    Cli(("--lens",), "logit, or a tuned/Jacobian lens directory."),
]


class LayerOptions(Protocol):
    """The layer, top-k, template and lens options every lens-reading tool's input has."""

    layer_strategy: LayerStrategy | None
    layer_step: int
    layers: list[int] | None
    top_k: int
    raw: bool
    lens: str


def options_config(
    options: LayerOptions,
    config_type: type[Config],
    tracked: list[str],
    *,
    every_by_default: bool = False,
    **extra: Any,
) -> Config:
    """The core's config from a tool input's shared options, plus the tool's own ``extra``
    fields: one place that maps them, for every tool."""
    return layer_config(
        config_type,
        options.layer_strategy,
        options.layers,
        every_by_default=every_by_default,
        layer_step=options.layer_step,
        top_k=options.top_k,
        track_tokens=tracked,
        use_chat_template=not options.raw,
        lens=options.lens,
        **extra,
    )
