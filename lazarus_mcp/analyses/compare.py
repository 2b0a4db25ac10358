"""Two runs' lenses side by side: two prompts on one model, or one prompt on two models that
share a vocabulary (a quantized checkpoint and its original: where in depth does quantization
change the prediction).

Each run is one forward pass of its own model; both lenses are compared row by row over the whole
vocabulary, at each run's last position. Runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.analysis import _top, block_milestones
from lazarus_mcp.analyses.attribution import tracked_at
from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.cells import (
    Cells,
    CellSpec,
    Column,
    Row,
    cell_stats,
    check_top_k,
    row_logits,
)
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.readout import Lens, lens_name, make_lens
from lazarus_mcp.lens.taps import tapped_forward
from lazarus_mcp.lens.tokens import EncodedPrompt
from lazarus_mcp.schema import AnalysisConfig, TokenProbability
from lazarus_mcp.schema.analysis import LensUsed
from lazarus_mcp.schema.compare import CompareLayer, CompareResult, CompareSide
from lazarus_mcp.schema.fidelity import Fidelity

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


@dataclass
class SideLens:
    """One run's lens at its last position: the displayed rows' statistics, every block's (the
    milestones) and the fidelity."""

    shown: Column
    blocks: Column
    fidelity: Fidelity
    lens: LensUsed


@dataclass
class Divergences:
    """The two runs' distributions compared at each displayed row, and their own outputs'."""

    js: np.ndarray  # [L]
    kl_ab: np.ndarray  # [L]
    kl_ba: np.ndarray  # [L]
    final_js: float


@dataclass
class _Run:
    loaded: LoadedModel
    prompt: str
    encoded: EncodedPrompt
    side: SideLens

    @property
    def shown(self) -> Column:
        return self.side.shown


@dataclass
class _Distributions:
    logprobs: np.ndarray  # [L, V]: the displayed rows
    probs: np.ndarray
    final_lp: np.ndarray  # [V]: the model's own output
    final_p: np.ndarray


def divergences(a: _Distributions, b: _Distributions) -> Divergences:
    """Row by row over the whole vocabulary (also what each rank of a pipeline computes for
    its own rows, ``distributed/compare_step.py``)."""
    return Divergences(
        js=stats.js_divergence(a.logprobs, a.probs, b.logprobs, b.probs),
        kl_ab=stats.kl_divergence(a.logprobs, a.probs, b.logprobs),
        kl_ba=stats.kl_divergence(b.logprobs, b.probs, a.logprobs),
        final_js=float(stats.js_divergence(a.final_lp, a.final_p, b.final_lp, b.final_p)),
    )


def check_comparable(a: LoadedModel, b: LoadedModel) -> None:
    """Two models are compared token by token only if every id means the same string."""
    if a is b:
        return
    if a.info.vocab_size != b.info.vocab_size or a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise InvalidRequestError(
            f"{a.info.model_id} and {b.info.model_id} do not share a vocabulary (the same ids for "
            "the same strings), so their predictions cannot be compared token by token"
        )
    if a.info.num_layers != b.info.num_layers:
        raise InvalidRequestError(
            f"{a.info.model_id} has {a.info.num_layers} layers and {b.info.model_id} "
            f"{b.info.num_layers}: compare needs the same depth to pair the layers"
        )


def side_lens(
    lens: Lens,
    hidden: dict[Row, mx.array],
    own: mx.array,
    layers: list[int],
    every: list[int],
    last: int,
    top_k: int,
    tracked: list[int],
) -> tuple[Cells, _Distributions | None]:
    """The cells of ``every`` block at one cell (``hidden[i]`` [1, D], ``own`` [1, V]) and the
    distributions of the displayed ``layers`` among them (None without any)."""
    cells = cell_stats(CellSpec(lens, every, last, top_k, tracked), hidden, own)
    if not layers:
        return cells, None
    logits = row_logits(lens, layers, hidden, own, last)[:, 0]
    own32 = own[0].astype(mx.float32)
    mx.eval(logits, own32)
    lp, p = stats.softmax_pair(np.array(logits))
    final_lp, final_p = stats.softmax_pair(np.array(own32))
    return cells, _Distributions(lp, p, final_lp, final_p)


def _run(
    loaded: LoadedModel,
    encoded: EncodedPrompt,
    config: AnalysisConfig,
    layers: list[int],
    tracked: list[int],
) -> tuple[SideLens, _Distributions]:
    """One run's lens at its last position: every block (milestones), the displayed rows'
    statistics and distributions (the comparison), from one forward pass."""
    last = loaded.info.num_layers - 1
    every = list(range(last + 1))
    lens = make_lens(loaded, lens_name(config))
    position = len(encoded.token_ids) - 1
    tapped = tapped_forward(
        loaded.model,
        mx.array([encoded.token_ids]),
        mx.array([[[position]]]),
        outputs=every,
        embedding_factor=loaded.embedding_factor(config.embedding_scale),
        windows=loaded.sliding_windows,
    )
    hidden: dict[Row, mx.array] = {i: h[0] for i, h in tapped.outputs.items()}
    own = tapped.logits[0]
    cells, dist = side_lens(lens, hidden, own, layers, every, last, config.top_k, tracked)
    assert dist is not None
    fidelity = fidelities(lens, last, hidden[last], own)[0]
    used = LensUsed(**lens.describe())
    return SideLens(cells.rows_at(layers).column(0), cells.column(0), fidelity, used), dist


def _side(run: _Run) -> CompareSide:
    text = run.loaded.token_text
    return CompareSide(
        model=run.loaded.info,
        **run.encoded.described(run.prompt, text),
        final_prediction=_top(
            text, run.shown.final_top_ids.tolist(), run.shown.final_top_probs.tolist()
        ),
        fidelity=run.side.fidelity,
        milestones=block_milestones(text, run.side.blocks),
        lens=run.side.lens,
    )


def divergence_layer(layers: list[int], top_a: list[int], top_b: list[int]) -> int | None:
    """First layer from which the two top-1 tokens differ at every later captured layer."""
    found = None
    for layer, a, b in zip(layers, top_a, top_b, strict=True):
        if a != b and found is None:
            found = layer
        elif a == b:
            found = None
    return found


def compare_loaded(
    loaded_a: LoadedModel,
    loaded_b: LoadedModel,
    prompt_a: str,
    prompt_b: str,
    config: AnalysisConfig,
    lens_b: str | None = None,
) -> CompareResult:
    """Both runs and their comparison, synchronously, on the MLX worker thread.

    ``lens_b``: run b reads its blocks through this lens instead of ``config.lens`` (two lenses
    side by side on one model and prompt: where they disagree)."""
    check_comparable(loaded_a, loaded_b)
    info = loaded_a.info
    check_top_k(config.top_k, info.vocab_size)
    layers = select_layers(config, info.num_layers)
    tracked = [loaded_a.token_text.resolve(q).token_id for q in config.track_tokens]
    if any(t >= info.vocab_size for t in tracked):
        raise InvalidRequestError("a tracked token is outside the models' vocabulary")
    config_b = config if lens_b is None else config.model_copy(update={"lens": lens_b})
    encoded_a = encode_prompt(loaded_a.tokenizer, prompt_a, config.use_chat_template)
    encoded_b = encode_prompt(loaded_b.tokenizer, prompt_b, config.use_chat_template)
    pipelines = [getattr(m, "pipeline", None) for m in (loaded_a, loaded_b)]
    if pipelines[0] is not None or pipelines[1] is not None:
        if pipelines[0] is None or pipelines[1] is None:
            raise InvalidRequestError(
                "compare runs both models in one process or both over the same --shards group, "
                "not one of each"
            )
        # Each rank compares its own rows; only the numbers come back (distributed/).
        side_a, side_b, div = pipelines[0].compare(
            loaded_a, loaded_b, [encoded_a, encoded_b], [config, config_b], layers, tracked
        )
    else:
        with loaded_a.scope():
            side_a, dist_a = _run(loaded_a, encoded_a, config, layers, tracked)
        with loaded_b.scope():
            side_b, dist_b = _run(loaded_b, encoded_b, config_b, layers, tracked)
        div = divergences(dist_a, dist_b)
    run_a = _Run(loaded_a, prompt_a, encoded_a, side_a)
    run_b = _Run(loaded_b, prompt_b, encoded_b, side_b)
    js, kl_ab, kl_ba = div.js, div.kl_ab, div.kl_ba
    rows_a, rows_b = run_a.shown, run_b.shown
    compared = [
        CompareLayer(
            layer_idx=layer,
            js_divergence=max(0.0, float(js[k])),
            kl_a_b=max(0.0, float(kl_ab[k])),
            kl_b_a=max(0.0, float(kl_ba[k])),
            top_a=_first(run_a, k),
            top_b=_first(run_b, k),
            tracked_a=tracked_at(run_a.loaded.token_text, rows_a, tracked, k),
            tracked_b=tracked_at(run_b.loaded.token_text, rows_b, tracked, k),
        )
        for k, layer in enumerate(layers)
    ]
    return CompareResult(
        a=_side(run_a),
        b=_side(run_b),
        config=config,
        captured_layers=layers,
        layers=compared,
        final_js_divergence=max(0.0, div.final_js),
        divergence_layer=divergence_layer(
            layers, rows_a.top_ids[:, 0].tolist(), rows_b.top_ids[:, 0].tolist()
        ),
    )


def _first(run: _Run, k: int) -> TokenProbability:
    token_id = int(run.shown.top_ids[k, 0])
    return TokenProbability(
        token=run.loaded.token_text(token_id),
        token_id=token_id,
        probability=float(run.shown.top_probs[k, 0]),
    )
