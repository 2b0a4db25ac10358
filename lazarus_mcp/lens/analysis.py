"""One analysis from a loaded model: check the request, encode the prompt, run the lens, and
fill the result contract. Synchronous; runs on the MLX worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import guards
from lazarus_mcp.lens.compute import LensArrays, compute_lens
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.lens.tokens import ResolvedToken, TokenText, encode_prompt
from lazarus_mcp.schema import (
    AnalysisConfig,
    AnalysisResult,
    LayerPrediction,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
)

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


def _top(text: TokenText, ids: list[int], probs: list[float]) -> list[TokenProbability]:
    return [
        TokenProbability(token=text(i), token_id=i, probability=p)
        for i, p in zip(ids, probs, strict=True)
    ]


def _layer_predictions(text: TokenText, arrays: LensArrays) -> list[LayerPrediction]:
    predictions = []
    for row, layer in enumerate(arrays.layers):
        top = _top(text, arrays.top_ids[row].tolist(), arrays.top_probs[row].tolist())
        predictions.append(
            LayerPrediction(
                layer_idx=layer,
                top_token=top[0].token,
                top_token_id=top[0].token_id,
                top_probability=top[0].probability,
                top_k=top,
                entropy=float(arrays.entropy[row]),
                kl_divergence=max(0.0, float(arrays.kl[row])),
            )
        )
    return predictions


def _sequence(values: np.ndarray | None, seq: int | None, row: int | None = None) -> float | None:
    if values is None or seq is None:
        return None
    return float(values[seq] if row is None else values[seq, row])


def _evolutions(
    text: TokenText, tracked: list[ResolvedToken], arrays: LensArrays
) -> list[TokenEvolution]:
    evolutions = []
    multi = [t for t in tracked if t.multi_token]
    for col, token in enumerate(tracked):
        seq = multi.index(token) if token.multi_token else None
        steps = [
            TokenAtLayer(
                layer_idx=layer,
                probability=float(arrays.tracked_probs[row, col]),
                rank=int(arrays.tracked_ranks[row, col]),
                sequence_logprob=_sequence(arrays.sequence_logprobs, seq, row),
            )
            for row, layer in enumerate(arrays.layers)
        ]
        evolutions.append(
            TokenEvolution(
                query=token.query,
                token=text(token.token_id),
                token_id=token.token_id,
                pieces=token.pieces,
                multi_token=token.multi_token,
                layers=steps,
                final_probability=float(arrays.final_tracked_probs[col]),
                final_rank=int(arrays.final_tracked_ranks[col]),
                emergence_layer=next((s.layer_idx for s in steps if s.rank == 1), None),
                final_sequence_logprob=_sequence(arrays.final_sequence_logprobs, seq),
            )
        )
    return evolutions


def analyze_loaded(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    """The whole analysis of one prompt, synchronously, on the MLX worker thread."""
    info = loaded.info
    guards.check_request(prompt, config)
    if not 1 <= config.top_k <= info.vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {info.vocab_size} (the vocab size)")
    layers = select_layers(config, info.num_layers)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    text = loaded.token_text
    tracked = [text.resolve(query) for query in config.track_tokens]
    for token in tracked:
        if max((token.token_id, *token.piece_ids)) >= info.vocab_size:
            raise InvalidRequestError(f"token {token.query!r} is outside the model's vocabulary")
    guards.check_encoded(loaded, len(encoded.token_ids), len(layers))
    factor = loaded.embedding_factor(config.embedding_scale)
    with loaded.scope():
        arrays = compute_lens(
            loaded.model,
            loaded.head,
            encoded.token_ids,
            layers,
            config.top_k,
            [t.token_id for t in tracked],
            factor,
            loaded.sliding_windows,
            [list(t.piece_ids) for t in tracked if t.multi_token],
        )
    guards.check_finite(arrays.top_probs, arrays.entropy, arrays.kl, arrays.tracked_probs)
    guards.check_finite(arrays.final_top_probs, arrays.final_tracked_probs)
    scale = config.embedding_scale if config.embedding_scale is not None else info.embedding_scale
    return AnalysisResult(
        model=info,
        prompt=prompt,
        text_seen=encoded.text_seen,
        chat_template_applied=encoded.chat_template_applied,
        tokens=text.many(encoded.token_ids),
        token_ids=encoded.token_ids,
        position=len(encoded.token_ids) - 1,
        embedding_scale=scale,
        config=config,
        captured_layers=layers,
        final_prediction=_top(text, arrays.final_top_ids.tolist(), arrays.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, arrays),
        token_evolutions=_evolutions(text, tracked, arrays),
        fidelity=arrays.fidelity,
        milestones=milestones(
            text,
            layers,
            arrays.top_ids[:, 0].tolist(),
            arrays.final_top_ranks.tolist(),
            arrays.entropy.tolist(),
            int(arrays.final_top_ids[0]),
        ),
    )
