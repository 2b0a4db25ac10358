"""Direct logit attribution and the sub-layer lens of one prompt, from one forward pass.

The decomposition itself is ``lens/decompose.py``; the lens between sub-layers and after each
block is the cell function (``lens/cells.py``) at the prompt's last position, so every number
here is the number ``analyze`` gives for the same block. Runs on the MLX worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.analysis import _top, block_milestones, layer_prediction
from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens.cells import CellSpec, Column, cell_stats, check_top_k
from lazarus_mcp.lens.decompose import component_logits, decompose, own_precap
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.readout import lens_name, make_lens
from lazarus_mcp.lens.subtaps import forward_sublayers
from lazarus_mcp.lens.tokens import ResolvedToken, TokenText
from lazarus_mcp.modeling.families import family_spec
from lazarus_mcp.schema.attribution import (
    AttributionComponent,
    AttributionConfig,
    AttributionResult,
    AttributionTarget,
    BlockPrediction,
    SublayerPrediction,
    TrackedProbability,
)

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


Prediction = TypeVar("Prediction", BlockPrediction, SublayerPrediction)


def tracked_at(
    text: TokenText, column: Column, ids: list[int], row: int
) -> list[TrackedProbability]:
    """The tracked tokens' probability and rank in one row of one cell."""
    return [
        TrackedProbability(
            token=text(t),
            token_id=t,
            probability=float(column.tracked_probs[row, n]),
            rank=int(column.tracked_ranks[row, n]),
        )
        for n, t in enumerate(ids)
    ]


def _predictions(
    cls: type[Prediction],
    text: TokenText,
    layers: list[int],
    column: Column,
    tracked_ids: list[int],
) -> list[Prediction]:
    return [
        layer_prediction(
            cls, text, layer, column, n, tracked=tracked_at(text, column, tracked_ids, n)
        )
        for n, layer in enumerate(layers)
    ]


def _resolve(loaded: LoadedModel, query: str) -> ResolvedToken:
    token = loaded.token_text.resolve(query)
    if token.token_id >= loaded.info.vocab_size:
        raise InvalidRequestError(f"token {query!r} is outside the model's vocabulary")
    return token


def attribute_loaded(
    loaded: LoadedModel,
    prompt: str,
    config: AttributionConfig,
    target_ids: list[int] | None = None,
) -> AttributionResult:
    """The whole attribution of one prompt, synchronously, on the MLX worker thread.

    ``target_ids`` (internal: references name tokens by id) replaces the targets' strings."""
    info = loaded.info
    check_top_k(config.top_k, info.vocab_size)
    layers = select_layers(config, info.num_layers)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    text = loaded.token_text
    queried = [_resolve(loaded, q) for q in config.track_tokens]
    foil = _resolve(loaded, config.foil) if config.foil is not None else None
    model, head = loaded.model, loaded.head
    lens = make_lens(loaded, lens_name(config))
    blocks = block_list(model)
    mid_name = family_spec(info.family).mid_residual_module(blocks[0])
    if mid_name is None:
        raise UnsupportedModelError(
            f"{info.family}: its blocks have no residual state between attention and MLP to read"
        )
    position = len(encoded.token_ids) - 1
    last = info.num_layers - 1
    every = list(range(info.num_layers))
    with loaded.scope():
        states = forward_sublayers(
            model,
            [encoded.token_ids],
            [position],
            mid_name,
            loaded.embedding_factor(config.embedding_scale),
            loaded.sliding_windows,
        )
        assert states.mid is not None
        at = [[a[0, 0] for a in group] for group in (states.entered, states.mid, states.left)]
        parts = decompose(*at)
        own = states.logits[0, 0].astype(mx.float32)
        default_target = int(np.array(mx.argmax(own)))
        if target_ids is None:
            target_ids = [t.token_id for t in queried] or [default_target]
        else:
            queried = [ResolvedToken(f"#{t}", t, [text(t)]) for t in target_ids]
        shown = target_ids + ([foil.token_id] if foil else [])
        contrib = component_logits(head, parts, states.left[-1].dtype)
        precap = own_precap(head, parts.final)
        picked = [contrib[:, mx.array(shown)], precap[mx.array(shown)], own[mx.array(shown)]]
        mx.eval(*picked)
        # The lens after each sub-layer: no row of it is the model's own output (last=None).
        mid_column = cell_stats(
            CellSpec(lens, layers, None, config.top_k, shown),
            {i: at[1][i][None] for i in layers},
            own[None],
        ).column(0)
        # After each block: every block, for the milestones; the selected ones are displayed.
        block_cells = cell_stats(
            CellSpec(lens, every, last, config.top_k, shown),
            {i: at[2][i][None] for i in every},
            own[None],
        )
        block_column = block_cells.rows_at(layers).column(0)
        fidelity = fidelities(lens, last, states.left[-1][0], states.logits[0])[0]
    contrib_np, precap_np, logit_np = (np.array(a) for a in picked)
    prob_np = block_column.final_tracked_probs
    sums = contrib_np.astype(np.float64).sum(axis=0)
    queries: list[str | None] = [t.query for t in queried] or [None]
    all_queries = queries + ([foil.query] if foil else [])
    described = [
        AttributionTarget(
            token=text(t),
            token_id=t,
            query=all_queries[n],
            logit=float(logit_np[n]),
            logit_precap=float(precap_np[n]),
            probability=float(prob_np[n]),
            component_sum=float(sums[n]),
        )
        for n, t in enumerate(shown)
    ]
    components = [
        AttributionComponent(
            kind=kind,
            layer_idx=layer,
            logits=[float(v) for v in contrib_np[c, : len(target_ids)]],
        )
        for c, (kind, layer) in enumerate(parts.kinds)
    ]
    diffs = (
        [float(contrib_np[c, 0] - contrib_np[c, -1]) for c in range(len(parts.kinds))]
        if foil
        else None
    )
    return AttributionResult(
        model=info,
        **encoded.described(prompt, text),
        config=config,
        targets=described[: len(target_ids)],
        foil=described[-1] if foil else None,
        components=components,
        logit_diffs=diffs,
        captured_layers=layers,
        sublayer_predictions=_predictions(SublayerPrediction, text, layers, mid_column, shown),
        layer_predictions=_predictions(BlockPrediction, text, layers, block_column, shown),
        final_prediction=_top(
            text, block_column.final_top_ids.tolist(), block_column.final_top_probs.tolist()
        ),
        fidelity=fidelity,
        milestones=block_milestones(text, block_cells.column(0)),
    )
