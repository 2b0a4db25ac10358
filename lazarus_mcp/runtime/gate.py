"""The request gate: every call of every tool, from every interface, passes it before any work.

``ModelAnalyzer`` (runtime/analyzer.py) is the one place the MCP tools, the CLI commands and the
Python API all reach the core, so the gate sits there, not in each tool: a tool cannot forget it.
It runs in two steps, both before the forward pass:

- :func:`check_request`, on the caller's task, before a model is opened: the prompts' characters,
  the number of prompts, tracked tokens, targets and foil, listed layers and positions (strict
  integers), top_k, float arguments. Nothing here depends on the model.
- :func:`admit`, as the first thing of the worker job, with the model loaded: top_k against the
  vocabulary, the layers against the depth, each prompt's tokens against the model's own context
  and the limit, the forward's peak memory (batch, padded length, positions, sub-layer taps),
  the result's size (cells x (top_k + tracked) entries) against the response budget, and the
  plot's cells. Each refusal names the figure and the limit.

The numbers are ``runtime/limits.py``'s one table (the CLI and the server raise them by flags).
Before the gate, attribute and compare checked nothing: a 300,000-character prompt grew the
server to 5.2 GB in 32 s and killed it (SIGSEGV); an analyze grid of 64 prompts x 120 tokens,
all layers, top_k 100 and 32 tracked tokens passed 8 GB. Both are refused here in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.runtime import limits

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.schema import AnalysisConfig

Kind = Literal["lens", "attribute", "compare", "generate", "model"]

# Bytes of JSON per entry of a result, measured on indented results (``to_json``, which the CLI
# writes; MCP's compact JSON is about half): a top-k or tracked entry at its depth in a grid
# ~130 bytes, a lens row's own fields ~400, a tracked token's evolution per column ~400 beside
# its entries. On the llama parity checkpoint, 183 positions x 6 rows, top_k 50, 3 tracked:
# 9.5 MiB written, 9.5 MiB estimated; top_k 5: 1.16 MiB written, 1.3 MiB estimated.
ENTRY_BYTES = 136
ROW_BYTES = 400
EVOLUTION_BYTES = 400
TOKEN_BYTES = 48  # a prompt token: its text and id, in tokens and token_ids
# The lens working set: the grid's chunk of [rows, chunk, V] float32 arrays, about a dozen alive.
LENS_CHUNK_BYTES = 32 << 20  # lens/cells.py CHUNK_BYTES
LENS_ARRAYS = 12


@dataclass(frozen=True)
class Request:
    """What a call asks of the core, as the gate sees it.

    ``prompts`` run on ``models`` in order when ``kind`` is ``compare`` (prompt A on the first
    model, prompt B on the second, or on the first when there is one); otherwise every prompt
    runs on the first model."""

    kind: Kind
    prompts: Sequence[str] = ()
    config: AnalysisConfig | None = None
    plot: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _strict_ints(what: str, values: Sequence[Any]) -> None:
    for value in values:
        if type(value) is not int:
            raise InvalidRequestError(f"{what} must be integers, not {type(value).__name__}")


def check_request(request: Request) -> None:
    """Before any work, whatever the model: raises :class:`limits.LimitExceededError` (or
    :class:`InvalidRequestError`) naming the figure and the limit."""
    lim = limits.current()
    limits.check_count("prompts", len(request.prompts), lim.max_prompts)
    for n, prompt in enumerate(request.prompts):
        if not isinstance(prompt, str):
            raise InvalidRequestError("a prompt must be a text")
        try:
            limits.check_prompt_chars(prompt, lim)
        except limits.LimitExceededError as exc:
            if len(request.prompts) == 1 or request.kind == "compare":
                raise
            raise limits.LimitExceededError(
                f"prompt {n + 1} of {len(request.prompts)}: {exc}"
            ) from exc
    config = request.config
    if config is None:
        return
    if type(config.top_k) is not int or not 1 <= config.top_k <= lim.max_top_k:
        raise limits.LimitExceededError(
            f"top_k must be an integer from 1 to {lim.max_top_k} (--max-top-k), "
            f"not {config.top_k!r}"
        )
    if config.custom_layers is not None:
        limits.check_count("layers listed", len(config.custom_layers), lim.max_layers_listed)
        _strict_ints("layers", config.custom_layers)
    if isinstance(config.positions, list):
        limits.check_count("positions listed", len(config.positions), lim.max_positions_listed)
        _strict_ints("positions", config.positions)
    what = "target" if request.kind == "attribute" else "tracked token"
    limits.check_tracked(list(config.track_tokens), lim, what=what)
    foil = getattr(config, "foil", None)
    if foil is not None:
        limits.check_token_string(foil, lim, what="foil")
    limits.check_float_arg("embedding_scale", config.embedding_scale, lim)


# With the model loaded, on the worker ------------------------------------------------------


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


def context_length(loaded: LoadedModel) -> tuple[int | None, str]:
    """The model's own context (positions it was trained for) and the config key stating it.

    Through the family registry where the loaded model reads it so (``loaded.context_length``,
    ``modeling/model_config.py`` on branch harden); else the keys transformers' configs use,
    from the built model's arguments."""
    config = getattr(loaded, "config", None)
    args = getattr(loaded.model, "args", None)

    def stated(key: str) -> object:
        return config.get(key) if isinstance(config, dict) else getattr(args, key, None)

    key = next((k for k in _CONTEXT_KEYS if stated(k) is not None), "")
    registry = getattr(loaded, "context_length", None)
    if isinstance(registry, int) and not isinstance(registry, bool) and registry > 0:
        return registry, key or "the model's context"
    for name in _CONTEXT_KEYS:
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, name
    return None, ""


def _arg(loaded: LoadedModel, *names: str) -> int | None:
    args = getattr(loaded.model, "args", None)
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _known(loaded: LoadedModel, name: str) -> int | None:
    """A number the loaded model reads through the registry (harden's properties), if any."""
    value = getattr(loaded, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def forward_bytes(
    loaded: LoadedModel,
    *,
    batch: int,
    length: int,
    cells: int,
    rows: int,
    taps: int,
    every: int = 0,
) -> int:
    """Peak bytes beyond the weights of one padded forward pass and its lens (float32).

    ``batch`` sequences padded to ``length`` tokens; ``cells`` (sequence, position) cells read;
    ``rows`` lens rows per cell; ``taps`` hidden states kept per cell (the rows, or three per
    block for the sub-layer lens); ``every``: rows read at one cell per sequence whatever is
    displayed (the milestones: every block, plus the embedding row when it is shown, at the
    last position; ``analyses/prompt_lens.py``). Activations ~ B T (4 D + 3 I) 4 per block alive
    at once, attention scores 3 B H T^2 4, the kept states, the model's logits at the cells
    (C V 4), and the lens working set (a dozen arrays of one chunk of [rows, cells, V], the
    milestones' [every, B, V] among them)."""
    info = loaded.info
    hidden, vocab = info.hidden_size, info.vocab_size
    heads = _known(loaded, "num_heads") or _arg(loaded, "num_attention_heads", "n_head") or 1
    inter = (
        _known(loaded, "intermediate_size")
        or _arg(loaded, "intermediate_size", "n_inner")
        or 4 * hidden
    )
    activations = batch * length * (4 * hidden + 3 * inter) * 4
    attention = 3 * batch * heads * length * length * 4
    kept = (taps * cells + every * batch) * hidden * 4
    logits = cells * vocab * 4
    widest = max(rows, every)  # a chunk holds one cell at least
    read = max(rows * cells, every * batch)
    chunk = max(widest * vocab * 4, min(LENS_CHUNK_BYTES, read * vocab * 4))
    return activations + attention + kept + logits + LENS_ARRAYS * chunk


def lens_bytes(loaded: LoadedModel, lens: str | None) -> int:
    """A learned lens's arrays, held while the call reads it (``lenses/readout.py``: a D x D
    float32 map and a bias per mapped layer, the embedding output included), bounded above
    by every layer mapped; the logit lens holds nothing of its own. Counted before the lens
    directory is opened, so an oversized lens is refused before it is read."""
    if lens is None or lens == "logit":
        return 0
    hidden = loaded.info.hidden_size
    return (loaded.info.num_layers + 1) * (hidden * hidden + hidden) * 4


def lens_result_bytes(
    tokens: int, positions: int, rows: int, top_k: int, tracked: int, grid: bool
) -> int:
    """JSON bytes of one analysis: its rows at the last position, its grid columns if any."""
    row = ROW_BYTES + ENTRY_BYTES * (top_k + tracked)
    column = rows * row + ENTRY_BYTES * top_k + EVOLUTION_BYTES * tracked
    return 2 * TOKEN_BYTES * tokens + column + (positions * (column + ROW_BYTES) if grid else 0)


@dataclass(frozen=True)
class Admission:
    """What the gate measured: each prompt's token count (the ones it checked)."""

    token_counts: list[int]


def _encode_count(loaded: LoadedModel, prompt: str, chat: bool) -> int:
    from lazarus_mcp.analyses.prompts import encode_prompt

    return len(encode_prompt(loaded.tokenizer, prompt, chat).token_ids)


def _check_tokens(loaded: LoadedModel, count: int) -> None:
    context, key = context_length(loaded)
    limits.check_prompt_tokens(count, context, context_key=key)


def admit(models: Sequence[LoadedModel], request: Request) -> Admission:
    """With the model(s) loaded, before the forward pass: everything that depends on them."""
    if request.kind == "model" or request.config is None:
        return Admission([])
    from lazarus_mcp.lens.cells import check_top_k
    from lazarus_mcp.lens.layers import select_layers
    from lazarus_mcp.lens.positions import select_positions

    config = request.config
    lim = limits.current()
    first = models[0]
    info = first.info
    check_top_k(config.top_k, info.vocab_size)
    layers = select_layers(config, info.num_layers)
    rows = len(layers) + (1 if config.include_embeddings else 0)
    tracked = len(config.track_tokens) + (1 if getattr(config, "foil", None) else 0)
    counts: list[int] = []
    result = 0
    peak = 0
    cells_total = 0
    many = len(request.prompts) > 1 and request.kind == "lens"
    # The milestones read every block (and the embedding row if shown) at the last position.
    every = info.num_layers + (1 if config.include_embeddings else 0)
    for n, prompt in enumerate(request.prompts):
        loaded = models[n] if request.kind == "compare" and n < len(models) else first
        if many and n:
            limits.check_interrupt()
        try:
            count = _encode_count(loaded, prompt, config.use_chat_template)
            _check_tokens(loaded, count)
            positions = len(select_positions(config.positions, count))
        except InvalidRequestError as exc:
            if not many:
                raise
            raise InvalidRequestError(f"prompt {n + 1} of {len(request.prompts)}: {exc}") from exc
        counts.append(count)
        if request.kind == "generate":
            _admit_generation(loaded, config, count, rows, tracked, request.plot)
            return Admission(counts)
        grid = config.positions != "last"
        cells = positions + (1 if grid else 0)
        cells_total += cells
        if request.kind == "attribute":
            # The sub-layer lens and the block lens; components: 2 per block + embedding + bias,
            # and per captured block before the last its own (2 per block up to it + 3).
            row = ROW_BYTES + ENTRY_BYTES * (config.top_k + tracked)
            component = 24 * tracked + 64
            by_block = sum(2 * layer + 5 for layer in layers if layer != info.num_layers - 1)
            result += 2 * rows * row + (2 * info.num_layers + 2 + by_block) * component
            taps = 3 * info.num_layers
            need = forward_bytes(
                loaded, batch=1, length=count, cells=1, rows=2 * rows, taps=taps, every=every
            )
        else:
            result += lens_result_bytes(count, positions, rows, config.top_k, tracked, grid)
            need = forward_bytes(
                loaded, batch=1, length=count, cells=cells, rows=rows, taps=rows + 1, every=every
            )
        peak = max(peak, need)
        if request.plot and grid and rows * positions > lim.max_plot_cells:
            raise limits.LimitExceededError(
                f"the heatmap would have {rows * positions:,} cells ({rows} rows x {positions} "
                f"positions); a plot draws at most {lim.max_plot_cells:,} legibly: choose fewer "
                "positions (e.g. positions -64..-1 as a list) or fewer layers"
            )
    if many:
        peak = max(peak, _batch_peak(first, counts, cells_total, rows, every))
    held = lens_bytes(first, config.lens) + lens_bytes(first, request.extra.get("lens_b"))
    limits.check_memory("this forward pass", peak + held, lim)
    limits.check_result_bytes("the result", result, lim)
    return Admission(counts)


def _batch_peak(loaded: LoadedModel, counts: list[int], cells: int, rows: int, every: int) -> int:
    """The largest padded group of a batch (``analyses.batch.plan_groups`` groups by length)."""
    try:
        from lazarus_mcp.analyses.batch import plan_groups
    except ImportError:  # pragma: no cover - the batch planner moved
        groups = [list(range(len(counts)))]
    else:
        groups = plan_groups(counts)
    per_cell = max(1, cells // max(1, len(counts)))
    return max(
        forward_bytes(
            loaded,
            batch=len(group),
            length=max(counts[i] for i in group),
            cells=per_cell * len(group),
            rows=rows,
            taps=rows + 1,
            every=every,
        )
        for group in groups
    )


# A generated token's step lists, per lens row, the top-k, the tracked tokens and the emitted
# token; besides the rows, the model's own top-k and the step's own fields.
STEP_BYTES = 400


def generation_result_bytes(
    prompt_tokens: int, new_tokens: int, rows: int, top_k: int, tracked: int
) -> int:
    """JSON bytes of a generation: every step is a lens column plus the emitted token's row."""
    row = ROW_BYTES + ENTRY_BYTES * (top_k + tracked + 1)
    step = STEP_BYTES + rows * row + ENTRY_BYTES * top_k
    return 2 * TOKEN_BYTES * (prompt_tokens + new_tokens) + new_tokens * step


def _admit_generation(
    loaded: LoadedModel, config: AnalysisConfig, count: int, rows: int, tracked: int, plot: bool
) -> None:
    """A generation: the prompt plus max_new_tokens against the context and the limit, the last
    step's memory (the KV cache of the whole sequence, estimated as its forward), the result's
    size (max_new_tokens x rows x (top_k + tracked + 1) entries) and the plot's cells."""
    lim = limits.current()
    new = int(getattr(config, "max_new_tokens", 1))
    total = count + new
    context, key = context_length(loaded)
    bounds = [b for b in (context, lim.max_prompt_tokens) if b is not None]
    if bounds and total > min(bounds):
        bound = min(bounds)
        which = (
            f"the model's context ({key or 'max_position_embeddings'})"
            if bound == context
            else "this server's limit (--max-prompt-tokens)"
        )
        raise limits.LimitExceededError(
            f"the prompt ({count:,} tokens) plus max_new_tokens ({new:,}) is {total:,} tokens, "
            f"more than {which} of {bound:,}; ask for fewer tokens or shorten the prompt"
        )
    if plot and rows * new > lim.max_plot_cells:
        raise limits.LimitExceededError(
            f"the heatmap would have {rows * new:,} cells ({rows} layers x {new} tokens); a plot "
            f"draws at most {lim.max_plot_cells:,} legibly: generate fewer tokens or read fewer "
            "layers"
        )
    need = forward_bytes(loaded, batch=1, length=total, cells=1, rows=rows, taps=rows + 1)
    limits.check_memory("this generation", need + lens_bytes(loaded, config.lens), lim)
    result = generation_result_bytes(count, new, rows, config.top_k, tracked)
    limits.check_result_bytes("the generation's result", result, lim)
