"""Direct logit attribution and the sub-layer lens, from one forward pass.

The final residual stream is the sum of what entered block 0 (the scaled embedding) and what each
block's attention and MLP sub-layers added (``subtaps``). Through the final norm, with its scale
``s`` fixed by that whole stream, each component's share of token t's logit is
``(centre(x) / s) . (g * W_U[t])``; the norm's bias, where it has one, is its own component. The
unembedding is the model's own module applied to the components (linear, so quantized or packed
heads need no dequantized copy). The components sum to the model's own pre-soft-cap logit; the
result states both. Runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import mlx.core as mx
import numpy as np

from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.analysis import _top, layer_prediction
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.final_norm import probe_norm
from lazarus_mcp.lens.head import LensHead, build_head
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.lens.rows import RowStats, row_arrays, row_stats
from lazarus_mcp.lens.subtaps import forward_sublayers
from lazarus_mcp.lens.tokens import ResolvedToken, TokenText, encode_prompt
from lazarus_mcp.schema.attribution import (
    AttributionComponent,
    AttributionConfig,
    AttributionResult,
    AttributionTarget,
    BlockPrediction,
    SublayerPrediction,
)

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


Kind = Literal["embedding", "attention", "mlp", "bias"]


@dataclass
class Decomposition:
    kinds: list[tuple[Kind, int | None]]
    vectors: mx.array  # [C, D] float32: the components, summing to the final residual stream
    final: mx.array  # [D]: the final residual stream


def decompose(entered: list[mx.array], mid: list[mx.array], left: list[mx.array]) -> Decomposition:
    """Components at one position from per-block states [D] each."""
    kinds: list[tuple[Kind, int | None]] = [("embedding", None)]
    vectors = [entered[0]]
    for i in range(len(left)):
        kinds += [("attention", i), ("mlp", i)]
        vectors += [mid[i] - entered[i], left[i] - mid[i]]
    stacked = mx.stack([v.astype(mx.float32) for v in vectors])
    return Decomposition(kinds, stacked, left[-1].astype(mx.float32))


def component_logits(head: LensHead, parts: Decomposition, dtype: mx.Dtype) -> mx.array:
    """[C, V] direct logit contributions (plus a bias row where the norm or head has one)."""
    affine = probe_norm(head.norm, parts.final.shape[-1], dtype)
    s = affine.scale(parts.final)
    scaled = affine.centre(parts.vectors) / s * affine.weight
    zero = mx.zeros((1, scaled.shape[-1]), dtype=mx.float32)
    offset = head.unembed(zero).astype(mx.float32)
    rows = head.unembed(scaled).astype(mx.float32) - offset
    bias_row = None
    if affine.bias is not None:
        bias_row = head.unembed(affine.bias[None]).astype(mx.float32)
    elif bool(mx.any(offset != 0)):
        bias_row = offset
    if bias_row is not None:
        rows = mx.concatenate([rows, bias_row])
        parts.kinds.append(("bias", None))
    if head.logit_factor is not None:
        rows = rows * head.logit_factor
    return rows


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


def _own_precap(head: LensHead, final: mx.array) -> mx.array:
    logits = head.unembed(head.norm(final[None])).astype(mx.float32)[0]
    return logits * head.logit_factor if head.logit_factor is not None else logits


Prediction = TypeVar("Prediction", BlockPrediction, SublayerPrediction)


def _predictions(
    cls: type[Prediction],
    text: TokenText,
    layers: list[int],
    rows: RowStats,
    tracked_ids: list[int],
) -> list[Prediction]:
    return [
        layer_prediction(cls, text, layer, rows, n, tracked=rows.tracked(text, tracked_ids, n))
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
    if not 1 <= config.top_k <= info.vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {info.vocab_size} (the vocab size)")
    layers = select_layers(config, info.num_layers)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    text = loaded.token_text
    queried = [_resolve(loaded, q) for q in config.track_tokens]
    foil = _resolve(loaded, config.foil) if config.foil is not None else None
    model, head = loaded.model, loaded.head
    blocks = block_list(model)
    mid_name = loaded.mid_residual_module(blocks[0])
    if mid_name is None:
        raise UnsupportedModelError(
            f"{info.family}: its blocks have no residual state between attention and MLP to read"
        )
    position = len(encoded.token_ids) - 1
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
        final_lp, final_p = stats.softmax_pair(own[None])
        final_lp, final_p = final_lp[0], final_p[0]
        default_target = int(np.array(mx.argmax(own)))
        if target_ids is None:
            target_ids = [t.token_id for t in queried] or [default_target]
        else:
            queried = [ResolvedToken(f"#{t}", t, [text(t)]) for t in target_ids]
        shown = target_ids + ([foil.token_id] if foil else [])
        split = _decomposable_head(loaded, parts.final)
        contrib = component_logits(split, parts, states.left[-1].dtype)
        precap = _own_precap(split, parts.final)
        mid_lp, mid_p = stats.softmax_pair(head(mx.stack([at[1][i] for i in layers])))
        last = info.num_layers - 1
        inner = [i for i in layers if i != last]
        lens_last = head(parts.final[None])[0]
        block_logits = [head(mx.stack([at[2][i] for i in inner]))] if inner else []
        if last in layers:
            block_logits.append(own[None])  # block N-1's lens is the model's own output
        block_lp, block_p = stats.softmax_pair(mx.concatenate(block_logits))
        final_ids, _ = stats.top_k(final_lp[None], config.top_k)
        outputs = [
            *row_arrays(mid_lp, mid_p, final_lp, final_p, config.top_k, shown),
            *row_arrays(block_lp, block_p, final_lp, final_p, config.top_k, shown),
            *fidelity_arrays(lens_last, own),
            contrib[:, mx.array(shown)],
            precap[mx.array(shown)],
            own[mx.array(shown)],
            final_p[mx.array(shown)],
            final_ids[0],
            final_p[final_ids[0]],
        ]
        mx.eval(*outputs)
    mid_rows = row_stats(outputs[0:7], len(shown))
    block_rows = row_stats(outputs[7:14], len(shown))
    fidelity = fidelity_of(outputs[14:17])
    contrib_np, precap_np, logit_np, prob_np = (np.array(a) for a in outputs[17:21])
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
        sublayer_predictions=_predictions(SublayerPrediction, text, layers, mid_rows, shown),
        layer_predictions=_predictions(BlockPrediction, text, layers, block_rows, shown),
        final_prediction=_top(text, np.array(outputs[21]).tolist(), np.array(outputs[22]).tolist()),
        fidelity=fidelity,
        milestones=milestones(
            text,
            layers,
            block_rows.top_ids[:, 0].tolist(),
            block_rows.final_top_ranks.tolist(),
            block_rows.entropy.tolist(),
            default_target,
        ),
    )
