"""Input fields every MCP tool shares, and the one way their layer options become a config.

``analyze``, ``track_tokens``, ``attribute`` and ``compare`` take the same model, prompt, layer
and template options; defining each field once keeps their JSON schemas (what an agent reads)
from drifting apart. The core's :func:`~lazarus_mcp.lens.layers.layer_config` turns their layer
options into a config, as ``lazarus introspect`` does, so a tool call and a command with the
same options choose the same blocks.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from lazarus_mcp.schema import LayerStrategy

MODEL_HELP = (
    "The model: a local directory holding a Hugging Face checkpoint (config.json, *.safetensors, "
    "tokenizer), a Hugging Face id such as 'Qwen/Qwen3-0.6B' (taken from the local cache, "
    "downloaded if missing), or 'demo' for the bundled demo model. Use the same spelling on every "
    "call: a loaded model is found again by this exact string."
)
PROMPT_HELP = (
    "The text to analyze. The lens reads the prediction for the token that would follow the "
    "last token of the prompt (after the chat template, unless raw)."
)
RAW_HELP = (
    "false (default): wrap the prompt in the model's chat template as one user message plus the "
    "assistant turn's opening, as a chat model sees a question. true: tokenize the text as given "
    "(with the tokenizer's BOS), for completions such as 'The capital of France is'. Models "
    "without a chat template always see the text as given."
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


ModelField = Annotated[str, Field(min_length=1, description=MODEL_HELP)]
PromptField = Annotated[str, Field(min_length=1, description=PROMPT_HELP)]
RawField = Annotated[bool, Field(description=RAW_HELP)]
LayerStepField = Annotated[int, Field(ge=1, description="Spacing for 'evenly_spaced'.")]
LayersField = Annotated[
    list[int] | None, Field(min_length=1, description=f"Blocks for 'custom'. {LAYERS_HELP}")
]
TopKField = Annotated[
    int,
    Field(ge=1, le=100, description="How many of the most likely next tokens to list per layer."),
]
# analyze samples the depth; attribute and compare are about depth, so they read every block.
SampledStrategyField = Annotated[
    LayerStrategy | None, Field(description=_strategy_help("evenly_spaced"))
]
EveryStrategyField = Annotated[LayerStrategy | None, Field(description=_strategy_help("all"))]


class Input(BaseModel):
    # An unknown argument is a typo the agent should hear about, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")


LensField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1000,
        description="'logit' (the model's own head on every block), or a tuned or Jacobian lens "
        "directory made for this model, relative to the server's --lens-dir (lenses read the "
        "early blocks far better; the result's 'lens' says which was read and its held-out fit).",
    ),
]
