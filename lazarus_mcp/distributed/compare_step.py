"""One rank's part of ``compare``: both runs' forwards through its blocks, and the comparison of
its own rows (``analyses.compare.side_lens`` and ``divergences``, the code one process runs).

Each run is the model's own forward (the engine's tapped forward with a ``Stage``) at its last
position; the last rank's output is sent to every rank (V * 4 bytes per run, as for the lens).
Each rank then reads every one of its blocks through each run's lens (the milestones and the
displayed rows' statistics) and compares the two runs' distributions at its displayed rows over
the whole vocabulary. What comes back is per block the cell statistics (top-k, entropy, KL,
tracked tokens) and per displayed row three numbers (JS, KL(a||b), KL(b||a)): the distributions
themselves never leave the rank. The last rank adds the fidelity of each run and the JS
divergence of the two models' own outputs.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.compare import divergences, side_lens
from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.lens_step import StageModel, pack_cells
from lazarus_mcp.distributed.link import Hop, Link, link_for
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.cells import Row
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.readout import make_lens
from lazarus_mcp.lens.taps import tapped_forward


def run_compare(group: Any, sides: list[StageModel], request: dict[str, Any]) -> bytes:
    """This rank's numbers for ``request`` (``pipeline.Pipeline.compare``), packed."""
    hops = [
        Hop((1, len(ids), held.loaded.info.hidden_size), (1, held.loaded.info.vocab_size))
        for ids, held in zip(request["batch"], sides, strict=True)
    ]
    link = link_for(group, sides[0].split, hops, sides[0].loaded.info.compute_dtype)
    return link.guard(lambda: _compare(group, sides, request, link))


def _compare(group: Any, sides: list[StageModel], request: dict[str, Any], link: Link) -> bytes:
    rank = group.rank()
    split = sides[0].split
    is_last = rank == split.ranks - 1
    last = split.num_layers - 1
    first, end = split.ranges[rank]
    mine = list(range(first, end))
    layers = [i for i in request["layers"] if first <= i < end]
    arrays: dict[str, np.ndarray] = {}
    dists = []
    finals = []
    meta: dict[str, Any] = {"blocks": mine, "layers": layers, "fidelity": [], "lens": []}
    for n, held in enumerate(sides):
        loaded = held.loaded
        ids: list[int] = request["batch"][n]
        lens = make_lens(loaded, request["lens"][n])
        with loaded.scope():
            tapped = tapped_forward(
                loaded.model,
                mx.array([ids]),
                mx.array([[[len(ids) - 1]]]),
                outputs=mine,
                embedding_factor=request["factor"][n],
                windows=loaded.sliding_windows,
                stage=link.stage(),
            )
            mx.eval(*link.pending, *tapped.outputs.values())
            own_here = tapped.logits[0].astype(mx.float32) if is_last else None
            own = link.broadcast(own_here)
            hidden: dict[Row, mx.array] = {i: h[0] for i, h in tapped.outputs.items()}
            cells, dist = side_lens(
                lens, hidden, own, layers, mine, last, request["top_k"], request["tracked"]
            )
            finals.append(stats.softmax_pair(np.array(own[0])))
            if is_last:
                meta["fidelity"].append(fidelities(lens, last, hidden[last], own)[0].model_dump())
        meta["lens"].append(lens.describe())
        arrays |= {f"{n}.{k}": v for k, v in pack_cells(cells).items()}
        dists.append(dist)
    if layers:
        assert dists[0] is not None and dists[1] is not None
        compared = divergences(dists[0], dists[1])
        arrays |= {"js": compared.js, "kl_ab": compared.kl_ab, "kl_ba": compared.kl_ba}
    if is_last:
        (lp_a, p_a), (lp_b, p_b) = finals
        meta["final_js"] = float(stats.js_divergence(lp_a, p_a, lp_b, p_b))
    return wire.pack(arrays, meta)
