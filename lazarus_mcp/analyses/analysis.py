"""The analysis of prompts from a loaded model: check the request, plan the lens, and fill the
result contract from the lens of each prompt (``prompt_lens``; run by ``batch``).
Synchronous; runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lazarus_mcp.analyses.finite import check_finite
from lazarus_mcp.analyses.prompt_lens import LensRequest, PromptLens
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.cells import Column, Row, check_top_k
from lazarus_mcp.lens.interrupt import check_interrupt
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.lens.positions import select_positions
from lazarus_mcp.lens.readout import lens_name, make_lens
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
from lazarus_mcp.schema.analysis import LensUsed
from lazarus_mcp.schema.fidelity import Milestones

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


def _top(text: TokenText, ids: list[int], probs: list[float]) -> list[TokenProbability]:
    return [
        TokenProbability(token=text(i), token_id=i, probability=p)
        for i, p in zip(ids, probs, strict=True)
    ]


Prediction = TypeVar("Prediction", bound=LayerPrediction)


def layer_prediction(
    cls: type[Prediction], text: TokenText, layer: Row, rows: Column, n: int, **extra: Any
) -> Prediction:
    """Row ``n`` of one cell's statistics as a :class:`LayerPrediction` (or a subclass, with
    ``extra``)."""
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


def _layer_predictions(text: TokenText, column: Column) -> list[LayerPrediction]:
    return [
        layer_prediction(LayerPrediction, text, layer, column, row)
        for row, layer in enumerate(column.rows)
    ]


def _sequence(values: np.ndarray | None, seq: int | None, row: int | None = None) -> float | None:
    if values is None or seq is None:
        return None
    return float(values[seq] if row is None else values[seq, row])


def _evolutions(
    text: TokenText,
    tracked: list[ResolvedToken],
    arrays: Column,
    sequences: PromptLens | None = None,
) -> list[TokenEvolution]:
    """Each tracked token across the rows; ``sequences``: multi-token strings' scores."""
    seq_lp = None if sequences is None else sequences.sequence_logprobs
    final_seq_lp = None if sequences is None else sequences.final_sequence_logprobs
    evolutions = []
    multi = [t for t in tracked if t.multi_token]
    for col, token in enumerate(tracked):
        seq = multi.index(token) if token.multi_token else None
        steps = [
            TokenAtLayer(
                layer_idx=layer,
                probability=float(arrays.tracked_probs[row, col]),
                rank=int(arrays.tracked_ranks[row, col]),
                sequence_logprob=_sequence(seq_lp, seq, row),
            )
            for row, layer in enumerate(arrays.rows)
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
                final_sequence_logprob=_sequence(final_seq_lp, seq),
            )
        )
    return evolutions


def analyze_loaded(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    """The whole analysis of one prompt, synchronously, on the MLX worker thread."""
    from lazarus_mcp.analyses.batch import analyze_many

    return analyze_many(loaded, [prompt], config)[0]


def single_position(config: AnalysisConfig) -> bool:
    """The last position alone and no embedding row: where multi-token tracked strings are
    scored (as continuations, in the same forward pass)."""
    return config.positions == "last" and not config.include_embeddings


@dataclass(frozen=True)
class LensPlan:
    """What a config asks of a loaded model, checked once for every prompt of a request."""

    layers: list[int]
    rows: list[int | None]  # None first when the embedding output is included
    tracked: list[ResolvedToken]
    request: LensRequest

    @property
    def multi_token(self) -> bool:
        return any(t.multi_token for t in self.tracked)


def resolve_tracked(loaded: LoadedModel, queries: list[str]) -> list[ResolvedToken]:
    """The tracked strings as tokens of this model, each inside its vocabulary."""
    tracked = [loaded.token_text.resolve(query) for query in queries]
    for token in tracked:
        if max((token.token_id, *token.piece_ids)) >= loaded.info.vocab_size:
            raise InvalidRequestError(f"token {token.query!r} is outside the model's vocabulary")
    return tracked


def plan_lens(loaded: LoadedModel, config: AnalysisConfig) -> LensPlan:
    info = loaded.info
    check_top_k(config.top_k, info.vocab_size)
    layers = select_layers(config, info.num_layers)
    tracked = resolve_tracked(loaded, config.track_tokens)
    rows: list[int | None] = [None, *layers] if config.include_embeddings else list(layers)
    request = LensRequest(
        lens=make_lens(loaded, lens_name(config)),
        rows=rows,
        last=info.num_layers - 1,
        top_k=config.top_k,
        tracked=[t.token_id for t in tracked],
        embedding_factor=loaded.embedding_factor(config.embedding_scale),
        windows=loaded.sliding_windows,
    )
    plan = LensPlan(layers, rows, tracked, request)
    if plan.multi_token and not single_position(config):
        raise InvalidRequestError(
            "multi-token track_tokens are scored at the last position only: use positions "
            "'last' without include_embeddings, or track single tokens"
        )
    return plan


def block_milestones(text: TokenText, blocks: Column) -> Milestones:
    """Milestones over every block (``blocks``: one cell's statistics over all of them)."""
    layers = [r for r in blocks.rows if r is not None]
    return milestones(
        text,
        layers,
        blocks.top_ids[:, 0].tolist(),
        blocks.final_top_ranks.tolist(),
        blocks.entropy.tolist(),
        int(blocks.final_top_ids[0]),
    )


def _position_lens(
    text: TokenText, encoded: EncodedPrompt, plan: LensPlan, position: int, column: Column
) -> PositionLens:
    check_interrupt()  # a grid of thousands of positions takes seconds to describe
    return PositionLens(
        position=position,
        token=text(encoded.token_ids[position]),
        token_id=encoded.token_ids[position],
        final_prediction=_top(text, column.final_top_ids.tolist(), column.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, column),
        token_evolutions=_evolutions(text, plan.tracked, column),
    )


def build_result(
    loaded: LoadedModel,
    prompt: str,
    encoded: EncodedPrompt,
    config: AnalysisConfig,
    plan: LensPlan,
    lens: PromptLens,
) -> AnalysisResult:
    """The result of one prompt from its lens at its positions (the last one always there)."""
    info = loaded.info
    text = loaded.token_text
    arrays = lens.positions[len(encoded.token_ids) - 1]
    for column in lens.positions.values():
        check_finite(column.top_probs, column.entropy, column.kl, column.tracked_probs)
        check_finite(column.final_top_probs, column.final_tracked_probs)
    scale = config.embedding_scale if config.embedding_scale is not None else info.embedding_scale
    grid = None
    if config.positions != "last":
        grid = [
            _position_lens(text, encoded, plan, p, lens.positions[p])
            for p in select_positions(config.positions, len(encoded.token_ids))
        ]
    return AnalysisResult(
        model=info,
        **encoded.described(prompt, text),
        embedding_scale=scale,
        config=config,
        captured_layers=plan.layers,
        final_prediction=_top(text, arrays.final_top_ids.tolist(), arrays.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, arrays),
        token_evolutions=_evolutions(text, plan.tracked, arrays, lens),
        fidelity=lens.fidelity,
        milestones=block_milestones(text, lens.blocks),
        lens=LensUsed(**plan.request.lens.describe()),
        grid=grid,
    )
