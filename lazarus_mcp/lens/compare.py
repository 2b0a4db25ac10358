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

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.analysis import _top
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.lens.rows import RowStats, row_arrays, row_stats
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.lens.tokens import EncodedPrompt, encode_prompt
from lazarus_mcp.schema import AnalysisConfig, TokenProbability
from lazarus_mcp.schema.compare import CompareLayer, CompareResult, CompareSide

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


@dataclass
class _Run:
    loaded: LoadedModel
    prompt: str
    encoded: EncodedPrompt
    logprobs: mx.array  # [L, V]
    probs: mx.array
    final_lp: mx.array  # [1, V]: the model's own output
    final_p: mx.array
    arrays: list[mx.array]  # unevaluated: rows, fidelity, final top-k


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


def _run(
    loaded: LoadedModel, prompt: str, config: AnalysisConfig, layers: list[int], tracked: list[int]
) -> _Run:
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    last = loaded.info.num_layers - 1
    captured, own = forward_with_taps(
        loaded.model,
        encoded.token_ids,
        sorted({*layers, last}),
        loaded.embedding_factor(config.embedding_scale),
        loaded.sliding_windows,
    )
    own = own.astype(mx.float32)
    inner = [i for i in layers if i != last]
    rows = [loaded.head(mx.stack([captured[i] for i in inner]))] if inner else []
    if last in layers:
        rows.append(own[None])  # block N-1's lens is the model's own output
    lp, p = stats.softmax_pair(mx.concatenate(rows))
    final_lp, final_p = stats.softmax_pair(own[None])
    final_ids, _ = stats.top_k(final_lp, config.top_k)
    arrays = [
        *row_arrays(lp, p, final_lp[0], final_p[0], config.top_k, tracked),
        *fidelity_arrays(loaded.head(captured[last][None])[0], own),
        final_ids[0],
        final_p[0][final_ids[0]],
    ]
    return _Run(loaded, prompt, encoded, lp, p, final_lp, final_p, arrays)


def _side(run: _Run, rows: RowStats, layers: list[int]) -> CompareSide:
    text = run.loaded.token_text
    evaluated = run.arrays
    final_ids = np.array(evaluated[10]).tolist()
    return CompareSide(
        model=run.loaded.info,
        **run.encoded.described(run.prompt, text),
        final_prediction=_top(text, final_ids, np.array(evaluated[11]).tolist()),
        fidelity=fidelity_of(evaluated[7:10]),
        milestones=milestones(
            text,
            layers,
            rows.top_ids[:, 0].tolist(),
            rows.final_top_ranks.tolist(),
            rows.entropy.tolist(),
            final_ids[0],
        ),
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
) -> CompareResult:
    """Both runs and their comparison, synchronously, on the MLX worker thread."""
    check_comparable(loaded_a, loaded_b)
    info = loaded_a.info
    if not 1 <= config.top_k <= info.vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {info.vocab_size} (the vocab size)")
    layers = select_layers(config, info.num_layers)
    tracked = [loaded_a.token_text.resolve(q).token_id for q in config.track_tokens]
    if any(t >= info.vocab_size for t in tracked):
        raise InvalidRequestError("a tracked token is outside the models' vocabulary")
    with loaded_a.scope():
        run_a = _run(loaded_a, prompt_a, config, layers, tracked)
        mx.eval(run_a.logprobs, run_a.probs, *run_a.arrays)
    with loaded_b.scope():
        run_b = _run(loaded_b, prompt_b, config, layers, tracked)
        mx.eval(run_b.logprobs, run_b.probs, *run_b.arrays)
    pair = [
        stats.js_divergence(run_a.logprobs, run_a.probs, run_b.logprobs, run_b.probs),
        stats.kl_divergence(run_a.logprobs, run_a.probs, run_b.logprobs),
        stats.kl_divergence(run_b.logprobs, run_b.probs, run_a.logprobs),
        stats.js_divergence(run_a.final_lp, run_a.final_p, run_b.final_lp, run_b.final_p)[0],
    ]
    mx.eval(*pair)
    js, kl_ab, kl_ba, final_js = (np.array(x) for x in pair)
    rows_a = row_stats(run_a.arrays[:7], len(tracked))
    rows_b = row_stats(run_b.arrays[:7], len(tracked))
    compared = [
        CompareLayer(
            layer_idx=layer,
            js_divergence=max(0.0, float(js[k])),
            kl_a_b=max(0.0, float(kl_ab[k])),
            kl_b_a=max(0.0, float(kl_ba[k])),
            top_a=_first(run_a, rows_a, k),
            top_b=_first(run_b, rows_b, k),
            tracked_a=rows_a.tracked(run_a.loaded.token_text, tracked, k),
            tracked_b=rows_b.tracked(run_b.loaded.token_text, tracked, k),
        )
        for k, layer in enumerate(layers)
    ]
    return CompareResult(
        a=_side(run_a, rows_a, layers),
        b=_side(run_b, rows_b, layers),
        config=config,
        captured_layers=layers,
        layers=compared,
        final_js_divergence=max(0.0, float(final_js)),
        divergence_layer=divergence_layer(
            layers, rows_a.top_ids[:, 0].tolist(), rows_b.top_ids[:, 0].tolist()
        ),
    )


def _first(run: _Run, rows: RowStats, k: int) -> TokenProbability:
    token_id = int(rows.top_ids[k, 0])
    return TokenProbability(
        token=run.loaded.token_text(token_id),
        token_id=token_id,
        probability=float(rows.top_probs[k, 0]),
    )
