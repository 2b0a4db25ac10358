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
from lazarus_mcp.lens.decompose import (
    Decomposition,
    block_decomposition,
    component_logits,
    decompose,
    own_precap,
)
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.head import LensHead, build_head
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.readout import Lens, TranslatorLens, lens_name, make_lens
from lazarus_mcp.lens.subtaps import forward_sublayers
from lazarus_mcp.lens.tokens import ResolvedToken, TokenText
from lazarus_mcp.schema.analysis import LensUsed
from lazarus_mcp.schema.attribution import (
    AttributionComponent,
    AttributionConfig,
    AttributionResult,
    AttributionTarget,
    BlockAttribution,
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


# As modeling/self_check.py proves a self-checked model's own head.
_SELF_CHECK_TOLERANCE = 1e-4


def _decomposable_head(loaded: LoadedModel, final: mx.array) -> LensHead:
    """The head to split the logit over: a final norm and a linear unembedding. A registry
    family's head is that. A self-checked model's head is its own code after the last block,
    which cannot be split; its final norm and unembedding, found by kind, serve instead where
    they give its own output on this very stream, and otherwise the call is refused, saying so."""
    if loaded.info.support != "self-checked":
        return loaded.head
    family = loaded.info.family
    try:
        head = build_head(loaded.model)
        own = mx.softmax(loaded.head(final[None]).astype(mx.float32), axis=-1)
        split = mx.softmax(head(final[None]), axis=-1)
        diff = float(mx.max(mx.abs(own - split)))
    except (UnsupportedModelError, ValueError) as exc:
        diff, reason = float("inf"), str(exc)
    else:
        reason = f"max |Δp| = {diff:.2g} between them and its own output"
    if not diff <= _SELF_CHECK_TOLERANCE:
        raise UnsupportedModelError(
            f"attribute cannot split the logit of '{family}' (self-checked, outside the family "
            f"registry): its head is more than a final norm and a linear unembedding ({reason}); "
            "analyze and track_tokens serve it"
        )
    return head


def _block_attributions(
    lens: Lens,
    head: LensHead,
    parts: Decomposition,
    states: list[mx.array],
    layers: list[int],
    target_ids: list[int],
    dtype: mx.Dtype,
) -> list[BlockAttribution]:
    """The lens's reading of each captured block before the last, decomposed
    (``decompose.block_decomposition``); ``states`` [D] are the blocks' outputs. One block at a
    time, so the [components, V] logits of only one are alive."""
    if not isinstance(lens, TranslatorLens):
        raise UnsupportedModelError(
            f"attribute needs a linear lens to decompose, not the {lens.name} lens"
        )
    picked = mx.array(target_ids)
    last = len(states) - 1
    out = []
    for layer in layers:
        if layer == last:
            continue  # the model's own output: ``components``
        matrix, bias = lens.linear_part(layer)
        final = lens.translate(states[layer][None], layer)[0]
        block = block_decomposition(parts, layer, matrix, bias, final)
        rows = component_logits(head, block, dtype)[:, picked]
        logits = own_precap(head, block.final)[picked]
        mx.eval(rows, logits)
        values = np.array(rows)
        out.append(
            BlockAttribution(
                layer_idx=layer,
                logits=[float(v) for v in np.array(logits)],
                components=[
                    AttributionComponent(
                        kind=kind, layer_idx=at, logits=[float(v) for v in values[c]]
                    )
                    for c, (kind, at) in enumerate(block.kinds)
                ],
            )
        )
    return out


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
    model = loaded.model
    lens = make_lens(loaded, lens_name(config))
    blocks = block_list(model)
    mid_name = loaded.mid_residual_module(blocks[0])
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
        split = _decomposable_head(loaded, parts.final)
        contrib = component_logits(split, parts, states.left[-1].dtype)
        precap = own_precap(split, parts.final)
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
        by_block = _block_attributions(
            lens, split, parts, at[2], layers, target_ids, states.left[-1].dtype
        )
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
        block_attributions=by_block,
        lens=LensUsed(**lens.describe()),
    )
