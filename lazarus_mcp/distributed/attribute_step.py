"""One rank's part of ``attribute``: the sub-layer states of its blocks at the prompt's last
position, its components' direct logit attribution, and the lens after its sub-layers and
blocks, with the code one process runs (``lens.subtaps``, ``lens.decompose``, ``lens.cells``).

The final norm's scale is fixed by the whole final residual stream, which only the last rank
has: it sends that stream (D floats) with the model's own logits (V floats) to every rank, one
all-sum of V + D float32 values. Each rank then splits its own blocks' additions (rank 0 also
the embedding, the last rank the norm's bias) and returns, per component, only its share of the
shown tokens' logits (targets and foil): C * S floats, never a hidden state.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.attribution import shown_ids
from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.lens_step import StageModel, pack_cells
from lazarus_mcp.distributed.link import Hop, Link, link_for
from lazarus_mcp.lens.cells import CellSpec, cell_stats
from lazarus_mcp.lens.decompose import component_logits, decompose, own_precap
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.readout import make_lens
from lazarus_mcp.lens.subtaps import forward_sublayers


def run_attribute(group: Any, held: StageModel, request: dict[str, Any]) -> bytes:
    """This rank's numbers for ``request`` (``pipeline.Pipeline.attribute``), packed."""
    info = held.loaded.info
    hop = Hop((1, len(request["ids"]), info.hidden_size), (info.vocab_size + info.hidden_size,))
    link = link_for(group, held.split, [hop], info.compute_dtype)
    return link.guard(lambda: _attribute(group, held, request, link))


def _attribute(group: Any, held: StageModel, request: dict[str, Any], link: Link) -> bytes:
    loaded, split = held.loaded, held.split
    rank = group.rank()
    is_last = rank == split.ranks - 1
    last = split.num_layers - 1
    first, end = split.ranges[rank]
    mine = list(range(first, end))
    layers = [i for i in request["layers"] if first <= i < end]
    ids: list[int] = request["ids"]
    lens = make_lens(loaded, request["lens"])
    vocab = loaded.info.vocab_size
    with loaded.scope():
        states = forward_sublayers(
            loaded.model,
            [ids],
            [len(ids) - 1],
            request["mid"],
            request["factor"],
            loaded.sliding_windows,
            stage=link.stage(),
        )
        assert states.mid is not None
        at = [[a[0, 0] for a in group] for group in (states.entered, states.mid, states.left)]
        mx.eval(*link.pending, *at[0], *at[1], *at[2])
        here = None
        if is_last:
            own_last = states.logits[0, 0].astype(mx.float32)
            here = mx.concatenate([own_last, at[2][-1].astype(mx.float32)])
        both = link.broadcast(here)
        own, final = both[:vocab], both[vocab:]
        shown = shown_ids(request["targets"], request["foil"], own)
        parts = decompose(at[0], at[1], at[2], first=first, final=final)
        contrib = component_logits(loaded.head, parts, at[2][-1].dtype, with_bias=is_last)
        picked = contrib[:, mx.array(shown)]
        mx.eval(picked)
        arrays: dict[str, np.ndarray] = {"contrib": np.array(picked)}
        meta: dict[str, Any] = {
            "kinds": parts.kinds,
            "layers": layers,
            "blocks": mine,
            "targets": shown[: len(shown) - (request["foil"] is not None)],
            "lens": lens.describe(),
        }
        if layers:
            mid_cells = cell_stats(
                CellSpec(lens, layers, None, request["top_k"], shown),
                {i: at[1][i - first][None] for i in layers},
                own[None],
            )
            arrays |= {f"mid.{k}": v for k, v in pack_cells(mid_cells).items()}
        block_cells = cell_stats(
            CellSpec(lens, mine, last, request["top_k"], shown),
            {i: at[2][i - first][None] for i in mine},
            own[None],
        )
        arrays |= {f"blocks.{k}": v for k, v in pack_cells(block_cells).items()}
        if is_last:
            precap = own_precap(loaded.head, final)[mx.array(shown)]
            mx.eval(precap)
            arrays |= {"precap": np.array(precap), "logits": np.array(own[mx.array(shown)])}
            fidelity = fidelities(lens, last, at[2][-1][None], own[None])[0]
            meta["fidelity"] = fidelity.model_dump()
    return wire.pack(arrays, meta)
