"""The MCP tools' inputs and outputs: pydantic models an agent sees as JSON schemas.

Inputs map onto the core's :class:`AnalysisConfig` the way the CLI's options do, so the same
arguments give the same result through either interface. Outputs are core models (``analyze``
returns :class:`AnalysisResult` itself) or thin views of them. The short text renderings are for
clients that read only a tool's text content.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from lazarus_mcp.lens.layers import layer_config
from lazarus_mcp.plots.grid import Metric
from lazarus_mcp.schema import (
    AnalysisBatch,
    AnalysisConfig,
    AnalysisResult,
    Fidelity,
    Milestones,
    ModelInfo,
    TokenEvolution,
)
from lazarus_mcp.schema.analysis import LensUsed
from lazarus_mcp.server.fields import (
    LAYERS_HELP,
    PROMPT_HELP,
    Input,
    LayersField,
    LayerStepField,
    LensField,
    ModelField,
    PromptField,
    RawField,
    SampledStrategyField,
    TopKField,
)
from lazarus_mcp.server.summaries import milestone_lines


class AnalyzeInput(Input):
    model: ModelField
    prompt: str | None = Field(
        None, min_length=1, description=f"{PROMPT_HELP} Give prompt or prompts, not both."
    )
    prompts: list[str] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Several texts to analyze together (one padded forward pass per group of "
        "similar length); the result is {results: [one analysis per prompt, in order]}.",
    )
    layer_strategy: SampledStrategyField = None
    layer_step: LayerStepField = 4
    layers: LayersField = None
    top_k: TopKField = 5
    track_tokens: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Tokens whose probability and rank to follow across the layers, spelled as "
        "the model spells them: ' Paris' (leading space) is the word after a space, 'Paris' the "
        "word at the start of a text. A string of several tokens tracks its first token.",
    )
    raw: RawField = False
    embedding_scale: float | None = Field(
        None,
        gt=0,
        description="Replace the model's own embedding scale (Gemma: sqrt(hidden_size)) for this "
        "call, to study its effect; null uses the model's.",
    )
    positions: Literal["last", "all"] | list[int] = Field(
        "last",
        description="Prompt positions to read: 'last' (the next-token prediction), 'all' (the "
        "whole grid: what every layer predicts at every position, in result.grid), or indices "
        "such as [0, 3, -1] (negative from the end).",
    )
    include_embeddings: bool = Field(
        False, description="Add a row for the embedding output (layer_idx null), before block 0."
    )
    lens: LensField = "logit"
    plot: bool = Field(
        False,
        description="Also return the layers x positions heatmap as a PNG image content block "
        "(each cell: the top token, coloured by plot_metric). Use with positions 'all'.",
    )
    plot_metric: Metric = Field(
        Metric.probability,
        description="Heatmap colour: probability (of the top token), entropy, kl, or rank (of "
        "the first track_tokens entry).",
    )

    @model_validator(mode="after")
    def _one_prompt_field(self) -> AnalyzeInput:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError(
                "missing required argument 'prompt' (a text) or 'prompts' (a list of texts)"
                if self.prompt is None
                else "give 'prompt' or 'prompts', not both"
            )
        return self

    @property
    def texts(self) -> list[str]:
        return [self.prompt] if self.prompt is not None else list(self.prompts or [])

    def config(self) -> AnalysisConfig:
        """The core's config, chosen exactly as ``lazarus introspect analyze`` chooses it."""
        return layer_config(
            AnalysisConfig,
            self.layer_strategy,
            self.layers,
            layer_step=self.layer_step,
            top_k=self.top_k,
            track_tokens=self.track_tokens,
            use_chat_template=not self.raw,
            embedding_scale=self.embedding_scale,
            positions=self.positions,
            include_embeddings=self.include_embeddings,
            lens=self.lens,
        )


class TrackTokensInput(Input):
    model: ModelField
    prompt: PromptField
    tokens: list[str] = Field(
        min_length=1,
        max_length=32,
        description="The tokens to follow, spelled as the model spells them: ' Paris' (leading "
        "space) is the word after a space, 'Paris' the word at the start of a text. A string of "
        "several tokens tracks its first token (the result says so).",
    )
    layers: list[int] | None = Field(
        None, min_length=1, description=f"Blocks to read; default every block. {LAYERS_HELP}"
    )
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


class ModelInfoInput(Input):
    model: ModelField


class LoadedModelsInput(Input):
    pass


class ModelStatus(ModelInfo):
    """``ModelInfo`` plus whether the model was in memory before this call."""

    already_loaded: bool = Field(
        description="True: the model was in memory when the call arrived. False: it was loaded "
        "for this call; it now stays loaded, so later calls on it start at once (until evicted)."
    )


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
    lens: LensUsed = Field(description="The lens every block was read through.")

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


class LoadedModel(BaseModel):
    model: ModelInfo
    memory_bytes: int = Field(description="Bytes of weights the model holds in memory.")


class LoadedModels(BaseModel):
    """What the server holds in memory and the limits it evicts by."""

    models: list[LoadedModel] = Field(description="Least recently used first.")
    max_models: int = Field(description="Models kept at most; the least recently used goes.")
    memory_budget_bytes: int | None = Field(
        description="Bytes of weights kept at most (null: no budget; one model always stays)."
    )
    memory_used_bytes: int


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

INFO_DOC = """\
Describe a model: family (model_type), number of blocks (layers are 0..num_layers-1), hidden \
size, vocabulary size, tied embeddings, embedding scale (Gemma), final logit soft-cap (Gemma 2), \
quantization, dtypes, device, chat template, and already_loaded. Loads the model if it is not in \
memory, so a later analyze starts at once. Use it to pick valid layer indices."""

LOADED_DOC = """\
The models the server holds in memory (least recently used first), with their sizes and the \
cache limits. Calls on a loaded model start at once; others load it first, which may evict the \
least recently used model."""


# Short renderings for text-only clients: the headline numbers, not the whole result.


def _pct(p: float) -> str:
    # Percent for the large ones; small ones keep their magnitude (rank already orders them).
    return f"{p:.1%}" if p >= 0.001 else f"{p:.0e}"


def render_analysis(result: AnalysisResult) -> str:
    info = result.model
    top = ", ".join(f"{t.token!r} {_pct(t.probability)}" for t in result.final_prediction[:5])
    lines = [
        f"{info.model_id} ({info.family}, {info.num_layers} layers): {len(result.tokens)} "
        f"tokens, predicting after {result.tokens[-1]!r}"
        + (" (chat template applied)" if result.chat_template_applied else "")
        + f"; lens {info.support}",
        *milestone_lines(result.milestones, result.fidelity),
        f"Final prediction: {top}",
        "Top token by layer:",
    ]
    lines += [
        f"  layer {'emb' if p.layer_idx is None else p.layer_idx}: {p.top_token!r} "
        f"{_pct(p.top_probability)} "
        f"(entropy {p.entropy:.2f}, KL {p.kl_divergence:.2f})"
        for p in result.layer_predictions
    ]
    lines += render_evolutions(result.token_evolutions)
    lines += render_grid(result)
    return "\n".join(lines)


GRID_TEXT_POSITIONS = 64


def render_grid(result: AnalysisResult) -> list[str]:
    """One line per position: the final top token and each layer's top token."""
    if not result.grid:
        return []
    lines = ["Grid (per position: the final top token, then the top token by layer):"]
    for column in result.grid[:GRID_TEXT_POSITIONS]:
        final = column.final_prediction[0]
        tops = " ".join(repr(p.top_token) for p in column.layer_predictions)
        lines.append(
            f"  pos {column.position} {column.token!r}: {final.token!r} "
            f"{_pct(final.probability)}; layers {tops}"
        )
    more = len(result.grid) - GRID_TEXT_POSITIONS
    if more > 0:
        lines.append(f"  ... {more} more positions in the structured result")
    return lines


def render_batch(batch: AnalysisBatch) -> str:
    return "\n\n".join(
        f"Prompt {n} of {len(batch.results)}:\n{render_analysis(r)}"
        for n, r in enumerate(batch.results, 1)
    )


def render_evolutions(evolutions: list[TokenEvolution]) -> list[str]:
    lines = []
    for evo in evolutions:
        path = ", ".join(
            f"L{'emb' if s.layer_idx is None else s.layer_idx} {_pct(s.probability)} #{s.rank}"
            for s in evo.layers
        )
        first = (
            "never rank 1"
            if evo.emergence_layer is None
            else f"rank 1 from layer {evo.emergence_layer}"
        )
        split = f" (first of {evo.pieces})" if evo.multi_token else ""
        if evo.final_sequence_logprob is not None:
            path += "; whole string log p by layer: " + ", ".join(
                f"L{s.layer_idx} {s.sequence_logprob:.2f}" for s in evo.layers
            )
            split += f" (whole string final log p {evo.final_sequence_logprob:.3f})"
        lines.append(
            f"Token {evo.token!r}{split}: {path}; final {_pct(evo.final_probability)} "
            f"#{evo.final_rank}; {first}"
        )
    return lines


def render_tracking(tracking: TokenTracking) -> str:
    head = f"{tracking.model_id}: layers {tracking.captured_layers}"
    return "\n".join([head, *render_evolutions(tracking.token_evolutions)])


def render_status(status: ModelStatus) -> str:
    extras = [
        f"embedding scale {status.embedding_scale:g}" if status.embedding_scale else "",
        f"soft-cap {status.final_logit_softcap:g}" if status.final_logit_softcap else "",
        f"{status.quantization.bits}-bit" if status.quantization else "",
        "tied embeddings" if status.tied_embeddings else "untied head",
        "chat template" if status.has_chat_template else "no chat template",
    ]
    return (
        f"{status.model_id}: {status.family} ({status.support}), {status.num_layers} layers, "
        f"hidden {status.hidden_size}, vocab {status.vocab_size}, "
        f"{', '.join(e for e in extras if e)}; "
        f"{status.dtype} computed in {status.compute_dtype} on {status.device}"
        + (f" (linear layers: {status.matmul})" if status.matmul != "mlx" else "")
        + "; "
        + ("was loaded already" if status.already_loaded else "loaded by this call")
    )


def render_loaded(loaded: LoadedModels) -> str:
    if not loaded.models:
        return f"No model loaded (up to {loaded.max_models} kept)."
    names = ", ".join(
        f"{m.model.model_id} ({m.memory_bytes / 2**20:.1f} MiB)" for m in loaded.models
    )
    return f"Loaded, least recently used first: {names}; up to {loaded.max_models} kept."
