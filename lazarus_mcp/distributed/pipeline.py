"""Rank 0's model: its own share plus the group that holds the rest, behind the same
``LoadedModel`` every analysis takes, and each analysis's seam onto the pipeline.

``load_sharded`` is what the model cache calls for ``LoadOptions(shards=N)`` (or a hostfile).
An analysis that finds a ``pipeline`` on its model hands it the one step that touches the
forward, and keeps the rest (plan, positions, result building) as in one process:
``Pipeline.passer`` is the lens pass of ``analyses.batch`` (prompts, grids, batches,
multi-token continuations), ``Pipeline.compare`` and ``Pipeline.attribute`` the arrays of
``analyses.compare`` and ``analyses.attribution``, ``Pipeline.start_steps`` the step source of
``generation.run``. Each sends one request per forward (``*_step`` on every rank) and joins the
ranks' compact answers. The analyses reach these seams by attribute, without importing this
package (it sits above them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.group import ShardGroup, shard_group
from lazarus_mcp.distributed.hosts import Hosts, local_hosts, read_hostfile
from lazarus_mcp.distributed.merge import joined, merge
from lazarus_mcp.distributed.split import holds
from lazarus_mcp.errors import InvalidRequestError, ModelLoadError, UnsupportedModelError
from lazarus_mcp.lens.readout import lens_name
from lazarus_mcp.modeling.checkpoint import resolve_model_path
from lazarus_mcp.modeling.loading import LoadedModel
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.schema.analysis import LensUsed
from lazarus_mcp.schema.fidelity import Fidelity
from lazarus_mcp.schema.model import ShardingInfo

if TYPE_CHECKING:
    from lazarus_mcp.analyses.attribution import AttributionArrays
    from lazarus_mcp.analyses.compare import Divergences, SideLens
    from lazarus_mcp.analyses.prompt_lens import LensPass, LensRequest, PassFn
    from lazarus_mcp.generation.cells import StepArrays
    from lazarus_mcp.lens.tokens import EncodedPrompt
    from lazarus_mcp.schema import AnalysisConfig, AttributionConfig
    from lazarus_mcp.schema.generation import GenerationConfig

_ERRORS = {
    "UnsupportedModelError": UnsupportedModelError,
    "InvalidRequestError": InvalidRequestError,
}


@dataclass
class Pipeline:
    """The group and this model's key on it (its ranks drop the model once rank 0 does)."""

    group: ShardGroup
    key: int
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group.hold(self.key)
        weakref.finalize(self, self.group.release, self.key)

    def passer(self, loaded: LoadedModel, lens: str) -> PassFn:
        """The lens pass of ``analyses.prompt_lens`` over the pipeline (what
        ``analyses.batch.analyze_encoded`` runs for a sharded model; it reaches this seam
        without importing this package)."""

        def run(
            request: LensRequest,
            rows: list[list[int]],
            wanted: list[list[int]],
            anchors: list[int],
            picks: np.ndarray | None,
        ) -> LensPass:
            message: dict[str, Any] = {
                "op": "lens",
                "key": self.key,
                "batch": rows,
                "wanted": wanted,
                "anchors": anchors,
                "picks": None if picks is None else picks.tolist(),
                "rows": request.rows,
                "lens": lens,
                "factor": request.embedding_factor,
                "top_k": request.top_k,
                "tracked": list(request.tracked),
            }
            parts = self.group.request(message)
            return merge(parts, request.rows, wanted, loaded.info.num_layers)

        return run

    def start_steps(
        self,
        loaded: LoadedModel,
        request: LensRequest,
        lens: str,
        config: GenerationConfig,
        seed: int,
    ) -> ShardedSteps:
        """A generation whose ranks each keep their own blocks' KV caches (``generate_step``)."""
        key = self.group.new_key()
        steps = ShardedSteps(self.group, key, request)
        message: dict[str, Any] = {
            "op": "gen_start",
            "key": self.key,
            "run": key,
            "lens": lens,
            "factor": request.embedding_factor,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": seed,
        }
        self.group.request(message)
        return steps

    def compare(
        self,
        loaded_a: LoadedModel,
        loaded_b: LoadedModel,
        encoded: list[EncodedPrompt],
        configs: list[AnalysisConfig],
        layers: list[int],
        tracked: list[int],
    ) -> tuple[SideLens, SideLens, Divergences]:
        """``analyses.compare``'s two runs and their comparison over the pipeline: each rank
        compares its own rows (``compare_step``); rank 0 joins the numbers."""
        from lazarus_mcp.analyses.compare import Divergences, SideLens

        pipelines = [getattr(m, "pipeline", None) for m in (loaded_a, loaded_b)]
        keys = [p.key for p in pipelines if isinstance(p, Pipeline)]
        if len(keys) != 2 or any(p.group is not self.group for p in pipelines if p):
            raise InvalidRequestError("compare over --shards needs both models on one group")
        message: dict[str, Any] = {
            "op": "compare",
            "keys": keys,
            "batch": [e.token_ids for e in encoded],
            "lens": [lens_name(c) for c in configs],
            "factor": [
                m.embedding_factor(c.embedding_scale)
                for m, c in zip((loaded_a, loaded_b), configs, strict=True)
            ],
            "layers": layers,
            "top_k": configs[0].top_k,
            "tracked": tracked,
        }
        unpacked = [wire.unpack(p) for p in self.group.request(message)]
        every = list(range(loaded_a.info.num_layers))
        sides = []
        for n in range(2):
            cells = joined([(a, m["blocks"]) for a, m in unpacked], str(n), every)
            fidelity = Fidelity(**unpacked[-1][1]["fidelity"][n])
            used = LensUsed(**unpacked[0][1]["lens"][n])
            sides.append(SideLens(cells.rows_at(layers).column(0), cells.column(0), fidelity, used))
        by_layer = {
            layer: tuple(arrays[name][k] for name in ("js", "kl_ab", "kl_ba"))
            for arrays, meta in unpacked
            for k, layer in enumerate(meta["layers"])
        }
        js, kl_ab, kl_ba = (np.array(v) for v in zip(*(by_layer[i] for i in layers), strict=True))
        final_js = float(unpacked[-1][1]["final_js"])
        return sides[0], sides[1], Divergences(js, kl_ab, kl_ba, final_js)

    def attribute(
        self,
        loaded: LoadedModel,
        encoded: EncodedPrompt,
        config: AttributionConfig,
        layers: list[int],
        targets: list[int],
        foil: int | None,
        mid: str,
    ) -> AttributionArrays:
        """``analyses.attribution``'s arrays over the pipeline: each rank attributes the logit
        to its own blocks' components (``attribute_step``); rank 0 joins them in order."""
        from lazarus_mcp.analyses.attribution import AttributionArrays

        message: dict[str, Any] = {
            "op": "attribute",
            "key": self.key,
            "ids": encoded.token_ids,
            "mid": mid,
            "lens": lens_name(config),
            "factor": loaded.embedding_factor(config.embedding_scale),
            "layers": layers,
            "top_k": config.top_k,
            "targets": targets,
            "foil": foil,
        }
        unpacked = [wire.unpack(p) for p in self.group.request(message)]
        arrays, meta = unpacked[-1]
        every = list(range(loaded.info.num_layers))
        mid_cells = joined([(a, m["layers"]) for a, m in unpacked], "mid", layers)
        return AttributionArrays(
            targets=list(meta["targets"]),
            kinds=[(kind, layer) for a, m in unpacked for kind, layer in m["kinds"]],
            contrib=np.concatenate([a["contrib"] for a, m in unpacked]),
            precap=arrays["precap"],
            logits=arrays["logits"],
            mid_column=mid_cells.column(0),
            block_cells=joined([(a, m["blocks"]) for a, m in unpacked], "blocks", every),
            fidelity=Fidelity(**meta["fidelity"]),
            lens=LensUsed(**unpacked[0][1]["lens"]),
        )


@dataclass
class ShardedSteps:
    """A generation over the pipeline (``generation.run.StepSource``): its key on the group,
    under which every rank keeps its blocks' caches until rank 0 drops this object."""

    group: ShardGroup
    key: int
    request: LensRequest

    def __post_init__(self) -> None:
        self.group.hold(self.key)
        weakref.finalize(self, self.group.release, self.key)

    def step(self, fed: list[int]) -> StepArrays:
        from lazarus_mcp.generation.cells import with_emitted

        message: dict[str, Any] = {
            "op": "gen_step",
            "run": self.key,
            "fed": fed,
            "rows": self.request.rows,
            "top_k": self.request.top_k,
            "tracked": list(self.request.tracked),
        }
        unpacked = [wire.unpack(p) for p in self.group.request(message)]
        meta = unpacked[-1][1]
        rows = self.request.rows
        cells = joined([(a, m["rows"]) for a, m in unpacked], "cells", rows)
        return with_emitted(cells.column(0), Fidelity(**meta["fidelity"]), int(meta["token"]))


@dataclass
class ShardedModel(LoadedModel):
    pipeline: Pipeline | None = None


# Why mpi is refused, before any rank starts (docs/distributed.md: what an mpi launch needs).
MPI_REFUSAL = (
    "the mpi backend is not supported: mpirun starts every rank itself as one command, while "
    "lazarus starts its ranks and wakes each one through its stdin, which mpirun forwards to "
    "rank 0 only; use ring (TCP) or jaccl (RDMA over Thunderbolt 5)"
)


def hosts_for(options: LoadOptions) -> Hosts:
    if options.hostfile is not None:
        hosts = read_hostfile(options.hostfile, options.backend)
    else:
        hosts = local_hosts(options.shards, options.backend or "ring")
    if hosts.backend == "mpi":
        raise InvalidRequestError(MPI_REFUSAL)
    return hosts


def load_sharded(model_id: str, options: LoadOptions) -> ShardedModel:
    """Every rank loads its share of ``model_id``; on the MLX worker thread of rank 0."""
    hosts = hosts_for(options)
    group = shard_group(hosts)
    path = str(resolve_model_path(model_id))
    key = group.new_key()
    group.hold(key)
    request = {
        "op": "load",
        "key": key,
        "model": path,
        "dtype": options.dtype,
        "device": options.device,
    }
    try:
        replies = [wire.from_json(r) for r in group.request(request)]
    finally:
        group.release(key)
    for rank, reply in enumerate(replies):
        if not reply["ok"]:
            cls = _ERRORS.get(reply["kind"], ModelLoadError)
            prefix = "" if rank == 0 else f"rank {rank}: "
            raise cls(prefix + reply["error"])
    assert group.state is not None
    held = group.state.held_model(key)
    loaded = held.loaded
    ranges = [tuple(r) for r in replies[0]["ranges"]]
    sharding = ShardingInfo(
        ranks=group.size,
        layers_per_rank=held.split.layers_per_rank(),
        layer_ranges=[[a, b - 1] for a, b in held.split.ranges],
        holds=[holds(r, held.split, loaded.info.tied_embeddings) for r in range(group.size)],
        weight_bytes_per_rank=[int(r["weight_bytes"]) for r in replies],
        resident_bytes_per_rank=[int(r["resident_bytes"]) for r in replies],
        backend=hosts.backend,
        hosts=hosts.names(),
    )
    info = loaded.info.model_copy(update={"model_id": model_id, "sharding": sharding})
    fields = {f: getattr(loaded, f) for f in loaded.__dataclass_fields__}
    fields["info"] = info
    return ShardedModel(**fields, pipeline=Pipeline(group, key, ranges))
