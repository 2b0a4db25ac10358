"""The generation contract: the lens at every token the model writes.

A generation is a prompt run (the fields every result opens with) followed by the tokens the
model wrote, one :class:`GenerationStep` per token. Each step is the lens at the position whose
prediction emitted the token, shaped like ``analyze``'s, so a step and ``analyze --positions
all`` on the whole sequence at that position agree (tests assert it to 1e-5 in float32).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from lazarus_mcp.schema.analysis import (
    AnalysisConfig,
    LayerPrediction,
    LensUsed,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
)
from lazarus_mcp.schema.fidelity import Fidelity
from lazarus_mcp.schema.prompt import PromptRun

StopReason = Literal["eos", "stop", "max_tokens", "deadline"]

# The most tokens one generation may ask for; the request gate bounds the product with the
# layers and top_k further (lens/generation gate).
MAX_NEW_TOKENS = 4096
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256


class GenerationConfig(AnalysisConfig):
    """What to generate and which lens to read at every generated token.

    The lens options are ``analyze``'s; ``positions`` and ``include_embeddings`` do not apply
    (every step reads its own last position, blocks only)."""

    max_new_tokens: int = Field(
        32, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate at most."
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="0 (default): greedy, the most likely token each step. Above 0: sample from "
        "softmax(logits / temperature).",
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: sample among the most likely tokens whose probabilities "
        "sum to top_p (1: the whole vocabulary). Applies when temperature > 0.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="Seed of the sampler: the same seed, prompt and settings give the same tokens. "
        "Null: a fresh seed, recorded in the result.",
    )
    stop: list[str] = Field(
        default_factory=list,
        max_length=MAX_STOP_STRINGS,
        description="Strings that end the generation when the generated text contains one "
        "(the text is cut before it). The model's end-of-sequence tokens always stop it.",
    )

    @model_validator(mode="after")
    def _generation_options(self) -> GenerationConfig:
        if self.positions != "last" or self.include_embeddings:
            raise ValueError(
                "generation reads the lens at each generated token: positions and "
                "include_embeddings do not apply"
            )
        for text in self.stop:
            if not text:
                raise ValueError("a stop string is empty")
            if len(text) > MAX_STOP_CHARS:
                raise ValueError(
                    f"a stop string has {len(text):,} characters, more than {MAX_STOP_CHARS}"
                )
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class GenerationStep(BaseModel):
    """The lens at one generated token: what each layer predicted before the model wrote it."""

    step: int = Field(description="0 for the first generated token.")
    position: int = Field(
        description="The sequence index whose prediction emitted the token (the token itself "
        "lands at position + 1)."
    )
    token_id: int
    token: str = Field(description="The emitted token as the model sees it (spaces kept).")
    probability: float = Field(
        description="The model's own probability of the emitted token (before temperature)."
    )
    rank: int = Field(description="Rank of the emitted token in the model's output (1 = top).")
    final_prediction: list[TokenProbability] = Field(
        description="Top-k of the model's own output distribution at this position."
    )
    layer_predictions: list[LayerPrediction] = Field(
        description="The lens at each captured block, as analyze's layer_predictions."
    )
    emitted: list[TokenAtLayer] = Field(
        description="The emitted token's probability and rank at each captured block."
    )
    decided_layer: int | None = Field(
        description="First captured block from which the emitted token ranks 1 at every later "
        "captured block (it became top-1 for good); null if it is not top-1 at the last."
    )
    token_evolutions: list[TokenEvolution] = Field(
        description="The tracked tokens at this position, as analyze's token_evolutions."
    )


class TrackedMilestone(BaseModel):
    """When, over the whole generation, one tracked token led."""

    query: str
    token: str
    token_id: int
    first_led_step: int | None = Field(
        description="First step where the token ranks 1 at some captured block; null: never."
    )
    first_led_layer: int | None = Field(description="The first block where it ranks 1 there.")
    led_for_good_step: int | None = Field(
        description="First step where the token is the model's own top-1 (the output leads "
        "with it); null: never."
    )
    led_for_good_layer: int | None = Field(
        description="At that step, the first block from which it ranks 1 at every later block."
    )
    emitted_steps: list[int] = Field(description="The steps at which the token was written.")


class GenerationMilestones(BaseModel):
    """Where the generation was decided: read these first."""

    decided_layers: list[int | None] = Field(
        description="Per step, the block where the emitted token became top-1 for good."
    )
    median_decided_layer: float | None = Field(
        description="Median of decided_layers over the steps that have one."
    )
    undecided_steps: list[int] = Field(
        description="Steps whose emitted token was not top-1 at the last block (sampled)."
    )
    tracked: list[TrackedMilestone] = Field(description="One entry per tracked token, in order.")


class GenerationResult(PromptRun):
    """The lens at every token the model generated for one prompt."""

    embedding_scale: float | None = Field(
        description="The embedding scale used for this run (the model's own unless overridden)."
    )
    config: GenerationConfig = Field(
        description="Everything asked for, the sampling settings and the seed included: the "
        "same config on the same model gives the same tokens."
    )
    seed: int = Field(
        description="The sampler's seed: the config's, else one drawn (0 when greedy, which "
        "draws nothing)."
    )
    captured_layers: list[int]
    generated_token_ids: list[int]
    generated_text: str = Field(
        description="The generated tokens decoded, cut before a matched stop string."
    )
    stop_reason: StopReason = Field(
        description="eos: the model wrote an end-of-sequence token; stop: a stop string "
        "appeared; max_tokens: max_new_tokens were written; deadline: the call's time ran out "
        "(the tokens so far are returned)."
    )
    stop_string: str | None = Field(
        None, exclude_if=lambda v: v is None, description="The stop string that matched."
    )
    steps: list[GenerationStep]
    milestones: GenerationMilestones
    fidelity: Fidelity = Field(
        description="The lens head on the last block against the model's own output, the worst "
        "over the steps."
    )
    lens: LensUsed = Field(
        default_factory=LensUsed,
        description="The lens every step's blocks were read through (config.lens).",
    )
