"""Direct logit attribution and the sub-layer lens of one prompt, from one forward pass.

The decomposition itself is ``lens/decompose.py``; the lens between sub-layers and after each
block is the cell function (``lens/cells.py``) at the prompt's last position, so every number
here is the number ``analyze`` gives for the same block. Runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.analysis import _top, block_milestones, layer_prediction
from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens.cells import Cells, CellSpec, Column, cell_stats, check_top_k
from lazarus_mcp.lens.decompose import (
    Decomposition,
    Kind,
    block_decomposition,
    component_logits,
    decompose,
    own_precap,
    rescaled_logits,
)
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.head import LensHead, build_head
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.readout import Lens, TranslatorLens, lens_name, make_lens
from lazarus_mcp.lens.subtaps import forward_sublayers
from lazarus_mcp.lens.tokens import EncodedPrompt, ResolvedToken, TokenText
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
from lazarus_mcp.schema.fidelity import Fidelity

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
    output_rows: mx.array,
    dtype: mx.Dtype,
) -> list[BlockAttribution]:
    """The lens's reading of each captured block before the last, decomposed
    (``decompose.block_decomposition``); ``states`` [D] are the blocks' outputs, ``output_rows``
    the components' logits of the model's output for ``target_ids``. Under an identity map they
    are rescaled (``decompose.rescaled_logits``); a learned map is projected one block at a
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
        if matrix is None and bias is None:
            kinds, rows = rescaled_logits(head, parts, output_rows, layer, final, dtype)
        else:
            block = block_decomposition(parts, layer, matrix, bias, final)
            rows = component_logits(head, block, dtype)[:, picked]
            kinds = block.kinds
        logits = own_precap(head, final)[picked]
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
                    for c, (kind, at) in enumerate(kinds)
                ],
            )
        )
    return out


@dataclass
class AttributionArrays:
    """What the forward gives an attribution: the components' logits for the shown tokens (the
    targets, then the foil), the model's own logits for them, and the lens's cells."""

    targets: list[int]  # the target ids (the model's own top-1 when none was asked for)
    kinds: list[tuple[Kind, int | None]]
    contrib: np.ndarray  # [C, S]: each component's share of each shown token's logit
    precap: np.ndarray  # [S]: the model's own logits before any soft-cap
    logits: np.ndarray  # [S]: the model's own logits
    mid_column: Column  # the lens after each selected block's attention sub-layer
    block_cells: Cells  # the lens after every block
    fidelity: Fidelity
    lens: LensUsed
    # The lens's reading of each captured block before the last, decomposed. Empty over
    # --shards: a block's decomposition needs every earlier block's components, held by other
    # ranks, and only compact statistics cross the wire.
    blocks: list[BlockAttribution] = field(default_factory=list)


def shown_ids(targets: list[int] | None, foil: int | None, own: mx.array) -> list[int]:
    """The targets (the model's own top-1 token when none are asked for), then the foil."""
    chosen = targets or [int(np.array(mx.argmax(own)))]
    return chosen + ([foil] if foil is not None else [])


def _arrays(
    loaded: LoadedModel,
    encoded: EncodedPrompt,
    config: AttributionConfig,
    layers: list[int],
    targets: list[int] | None,
    foil: int | None,
    mid_name: str,
) -> AttributionArrays:
    """One process: the sub-layer forward, the decomposition and the cells."""
    lens = make_lens(loaded, lens_name(config))
    position = len(encoded.token_ids) - 1
    last = loaded.info.num_layers - 1
    every = list(range(loaded.info.num_layers))
    with loaded.scope():
        states = forward_sublayers(
            loaded.model,
            [encoded.token_ids],
            [position],
            mid_name,
            loaded.embedding_factor(config.embedding_scale),
            loaded.sliding_windows,
        )
        assert states.mid is not None
        at = [[a[0, 0] for a in group] for group in (states.entered, states.mid, states.left)]
        parts = decompose(at[0], at[1], at[2])
        own = states.logits[0, 0].astype(mx.float32)
        shown = shown_ids(targets, foil, own)
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
        fidelity = fidelities(lens, last, states.left[-1][0], states.logits[0])[0]
        n = len(shown) - (foil is not None)
        by_block = _block_attributions(
            lens, split, parts, at[2], layers, shown[:n], picked[0][:, :n], states.left[-1].dtype
        )
    contrib_np, precap_np, logit_np = (np.array(a) for a in picked)
    used = LensUsed(**lens.describe())
    return AttributionArrays(
        shown[:n],
        parts.kinds,
        contrib_np,
        precap_np,
        logit_np,
        mid_column,
        block_cells,
        fidelity,
        used,
        by_block,
    )


def attribute_loaded(
    loaded: LoadedModel,
    prompt: str,
    config: AttributionConfig,
    target_ids: list[int] | None = None,
) -> AttributionResult:
    """The whole attribution of one prompt, synchronously, on the MLX worker thread.

    ``target_ids`` (internal: references name tokens by id) replaces the targets' strings.
    A model split over processes carries its ``pipeline``, which computes the same arrays rank
    by rank (``lazarus_mcp/distributed``)."""
    info = loaded.info
    check_top_k(config.top_k, info.vocab_size)
    layers = select_layers(config, info.num_layers)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    text = loaded.token_text
    queried = [_resolve(loaded, q) for q in config.track_tokens]
    foil = _resolve(loaded, config.foil) if config.foil is not None else None
    mid_name = loaded.mid_residual_module(block_list(loaded.model)[0])
    if mid_name is None:
        raise UnsupportedModelError(
            f"{info.family}: its blocks have no residual state between attention and MLP to read"
        )
    if target_ids is not None:
        queried = [ResolvedToken(f"#{t}", t, [text(t)]) for t in target_ids]
    asked = [t.token_id for t in queried]
    foil_id = foil.token_id if foil else None
    pipeline = getattr(loaded, "pipeline", None)
    if pipeline is None:
        arrays = _arrays(loaded, encoded, config, layers, asked, foil_id, mid_name)
    else:
        arrays = pipeline.attribute(loaded, encoded, config, layers, asked, foil_id, mid_name)
    target_ids = arrays.targets
    shown = target_ids + ([foil.token_id] if foil else [])
    contrib_np, precap_np, logit_np = arrays.contrib, arrays.precap, arrays.logits
    mid_column, block_cells, kinds = arrays.mid_column, arrays.block_cells, arrays.kinds
    block_column = block_cells.rows_at(layers).column(0)
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
        for c, (kind, layer) in enumerate(kinds)
    ]
    diffs = (
        [float(contrib_np[c, 0] - contrib_np[c, -1]) for c in range(len(kinds))] if foil else None
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
        fidelity=arrays.fidelity,
        milestones=block_milestones(text, block_cells.column(0)),
        lens=arrays.lens,
        block_attributions=arrays.blocks,
    )
