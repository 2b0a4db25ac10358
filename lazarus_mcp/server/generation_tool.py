"""The input and description of the ``generate`` tool.

Its arguments map onto :class:`GenerationConfig` exactly as ``lazarus introspect generate``
maps its options, so the same arguments give the same tokens and the same lens.
"""

from __future__ import annotations

import base64

from mcp.types import ImageContent
from pydantic import Field

from lazarus_mcp.lens.layers import layer_config
from lazarus_mcp.plots import Metric
from lazarus_mcp.schema.generation import (
    MAX_NEW_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    GenerationConfig,
    GenerationResult,
)
from lazarus_mcp.server.fields import (
    Input,
    LayersField,
    LayerStepField,
    ModelField,
    RawField,
    SampledStrategyField,
    TopKField,
)

GENERATE_DOC = """\
Let the model write a continuation of the prompt (greedy by default) and read the logit lens at \
every token it writes: for each generated token, what each selected layer predicted at the \
position that emitted it, the token's final probability and rank, decided_layer (the block \
from which it stayed top-1) and the tracked tokens. milestones says, per tracked token, the \
step and layer where it first led and where the output led with it. Use it to see when a model \
decides its answer, or inside a chain of thought. One forward per token over the KV cache; \
progress is reported per token; the result is the same JSON as `lazarus introspect generate -o`."""


class GenerateInput(Input):
    model: ModelField
    prompt: str = Field(
        min_length=1,
        description="The text to continue (wrapped in the chat template as one user message "
        "plus the assistant turn's opening, unless raw).",
    )
    max_new_tokens: int = Field(
        32, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate at most."
    )
    temperature: float = Field(
        0.0, ge=0.0, le=100.0, description="0: greedy (default); above 0: sampled."
    )
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (with temperature > 0)."
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="Sampler seed: the same seed and arguments give the same tokens; null draws "
        "one (recorded in the result's seed).",
    )
    stop: list[str] = Field(
        default_factory=list,
        max_length=MAX_STOP_STRINGS,
        description=f"Strings (each up to {MAX_STOP_CHARS} characters) that end the generation "
        "when the text contains one; the text is cut before it. End-of-sequence tokens always "
        "stop it.",
    )
    layer_strategy: SampledStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    track_tokens: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Tokens to follow at every step, spelled as the model spells them (' Paris' "
        "with its leading space); a string of several tokens tracks its first.",
    )
    raw: RawField = False
    plot: bool = Field(
        False,
        description="Also return the layers x generated-tokens heatmap as a PNG image (each "
        "cell: the layer's top prediction, coloured by plot_metric).",
    )
    plot_metric: Metric = Field(
        Metric.probability,
        description="Heatmap colour: probability (of the top token), entropy, kl, or rank (of "
        "the token the model wrote).",
    )

    def config(self) -> GenerationConfig:
        """The core's config, chosen exactly as ``lazarus introspect generate`` chooses it."""
        return layer_config(
            GenerationConfig,
            self.layer_strategy,
            self.layers,
            layer_step=self.layer_step,
            top_k=self.top_k,
            track_tokens=self.track_tokens,
            use_chat_template=not self.raw,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
        )


def generation_image(result: GenerationResult, metric: Metric) -> ImageContent:
    """The PNG heatmap (matplotlib; called off the event loop)."""
    from lazarus_mcp.plots.generation import render_generation_heatmap

    return ImageContent(
        type="image",
        data=base64.b64encode(render_generation_heatmap(result, "png", metric)).decode(),
        mime_type="image/png",
    )
