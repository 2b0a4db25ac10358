"""Analyses from a loaded model: check the request, run the lens (``batch``), and fill the
result contract. Synchronous; runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import guards
from lazarus_mcp.lens.compute import LensArrays, compute_lens
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.lens.positions import select_positions
from lazarus_mcp.lens.tokens import EncodedPrompt, ResolvedToken, TokenText
from lazarus_mcp.schema import (
    AnalysisConfig,
    AnalysisResult,
    LayerPrediction,
    PositionLens,
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


class _Rows(Protocol):
    """Per-row lens statistics: :class:`LensArrays` and ``rows.RowStats`` both are."""

    top_ids: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray


Prediction = TypeVar("Prediction", bound=LayerPrediction)


def layer_prediction(
    cls: type[Prediction], text: TokenText, layer: int | None, rows: _Rows, n: int, **extra: Any
) -> Prediction:
    """Row ``n`` of ``rows`` as a :class:`LayerPrediction` (or a subclass, with ``extra``)."""
    top = _top(text, rows.top_ids[n].tolist(), rows.top_probs[n].tolist())
    return cls(
        layer_idx=layer,
        top_token=top[0].token,
        top_token_id=top[0].token_id,
        top_probability=top[0].probability,
        top_k=top,
        entropy=float(rows.entropy[n]),
        kl_divergence=max(0.0, float(rows.kl[n])),
        **extra,
    )


def _layer_predictions(text: TokenText, arrays: LensArrays) -> list[LayerPrediction]:
    return [
        layer_prediction(LayerPrediction, text, layer, arrays, row)
        for row, layer in enumerate(arrays.layers)
    ]


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
                emergence_layer=next(
                    (s.layer_idx for s in steps if s.rank == 1 and s.layer_idx is not None), None
                ),
                final_sequence_logprob=_sequence(arrays.final_sequence_logprobs, seq),
            )
        )
    return evolutions


def analyze_loaded(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    """The whole analysis of one prompt, synchronously, on the MLX worker thread."""
    from lazarus_mcp.lens.batch import analyze_many

    return analyze_many(loaded, [prompt], config)[0]


def single_position(config: AnalysisConfig) -> bool:
    """The last position alone and no embedding row: the single-position lens (``compute``),
    which also scores multi-token tracked strings in its forward pass."""
    return config.positions == "last" and not config.include_embeddings


@dataclass(frozen=True)
class LensPlan:
    """What a config asks of a loaded model, checked once for every prompt of a request."""

    layers: list[int]
    rows: list[int | None]  # None first when the embedding output is included
    tracked: list[ResolvedToken]
    factor: float

    @property
    def multi_token(self) -> bool:
        return any(t.multi_token for t in self.tracked)


def plan_lens(loaded: LoadedModel, config: AnalysisConfig) -> LensPlan:
    info = loaded.info
    guards.check_config(config)
    if not 1 <= config.top_k <= info.vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {info.vocab_size} (the vocab size)")
    layers = select_layers(config, info.num_layers)
    text = loaded.token_text
    tracked = [text.resolve(query) for query in config.track_tokens]
    for token in tracked:
        if max((token.token_id, *token.piece_ids)) >= info.vocab_size:
            raise InvalidRequestError(f"token {token.query!r} is outside the model's vocabulary")
    rows: list[int | None] = [None, *layers] if config.include_embeddings else list(layers)
    plan = LensPlan(layers, rows, tracked, loaded.embedding_factor(config.embedding_scale))
    if plan.multi_token and not single_position(config):
        raise InvalidRequestError(
            "multi-token track_tokens are scored at the last position only: use positions "
            "'last' without include_embeddings, or track single tokens"
        )
    return plan


def analyze_single(
    loaded: LoadedModel, prompt: str, encoded: EncodedPrompt, config: AnalysisConfig, plan: LensPlan
) -> AnalysisResult:
    """One prompt at its last position (``compute_lens``: one forward, continuations included)."""
    with loaded.scope():
        arrays = compute_lens(
            loaded.model,
            loaded.head,
            encoded.token_ids,
            plan.layers,
            config.top_k,
            [t.token_id for t in plan.tracked],
            plan.factor,
            loaded.sliding_windows,
            [list(t.piece_ids) for t in plan.tracked if t.multi_token],
        )
    return build_result(loaded, prompt, encoded, config, plan, {len(encoded.token_ids) - 1: arrays})


def build_result(
    loaded: LoadedModel,
    prompt: str,
    encoded: EncodedPrompt,
    config: AnalysisConfig,
    plan: LensPlan,
    lenses: dict[int, LensArrays],
) -> AnalysisResult:
    """The result of one prompt from the lens at its positions (the last one always there)."""
    info = loaded.info
    text = loaded.token_text
    last = len(encoded.token_ids) - 1
    arrays = lenses[last]
    for lens in lenses.values():
        guards.check_finite(lens.top_probs, lens.entropy, lens.kl, lens.tracked_probs)
        guards.check_finite(lens.final_top_probs, lens.final_tracked_probs)
    scale = config.embedding_scale if config.embedding_scale is not None else info.embedding_scale
    grid = None
    if config.positions != "last":
        grid = [
            PositionLens(
                position=p,
                token=text(encoded.token_ids[p]),
                token_id=encoded.token_ids[p],
                final_prediction=_top(
                    text, lenses[p].final_top_ids.tolist(), lenses[p].final_top_probs.tolist()
                ),
                layer_predictions=_layer_predictions(text, lenses[p]),
                token_evolutions=_evolutions(text, plan.tracked, lenses[p]),
            )
            for p in select_positions(config.positions, len(encoded.token_ids))
        ]
    # Milestones are about blocks: the embedding row, if any, is left out.
    blocks = [n for n, row in enumerate(arrays.layers) if row is not None]
    return AnalysisResult(
        model=info,
        **encoded.described(prompt, text),
        embedding_scale=scale,
        config=config,
        captured_layers=plan.layers,
        final_prediction=_top(text, arrays.final_top_ids.tolist(), arrays.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, arrays),
        token_evolutions=_evolutions(text, plan.tracked, arrays),
        fidelity=arrays.fidelity,
        milestones=milestones(
            text,
            plan.layers,
            arrays.top_ids[blocks, 0].tolist(),
            arrays.final_top_ranks[blocks].tolist(),
            arrays.entropy[blocks].tolist(),
            int(arrays.final_top_ids[0]),
        ),
        grid=grid,
    )
