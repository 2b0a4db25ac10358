"""What every rank does with a request, rank 0 included: the same code on every rank, so the
collectives inside a request line up.

Requests (JSON, broadcast by rank 0): ``load`` a model's share, ``lens`` (``lens_step``),
``compare`` (``compare_step``), ``attribute`` (``attribute_step``), ``gen_start`` and
``gen_step`` (``generate_step``), ``stop``. Each carries ``alive``, the models and generations
rank 0 still holds; the others are dropped. A load that fails on a rank answers its one-line
error (every rank answers; nothing is out of step). A step stopped by the call's deadline or a
cancel finishes its collectives with zeros and answers ``expired`` (``link``): the group stays
in step. A step that fails otherwise part-way cannot be answered and ends the rank (``rank.py``).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.attribute_step import run_attribute
from lazarus_mcp.distributed.compare_step import run_compare
from lazarus_mcp.distributed.generate_step import RankRun, run_step, start_run
from lazarus_mcp.distributed.lens_step import StageModel, run_lens
from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.limits import Interrupt, set_interrupt

# The requests that run under the call's deadline on every rank and stop in step (``link``);
# loads and a generation's start are not stopped part-way (as in one process).
STOPPABLE = frozenset({"lens", "compare", "attribute", "gen_step"})


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc), else its peak (macOS getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@dataclass
class RankState:
    group: Any
    # Set by rank 0's cancel line (``rank.py``); rank 0's own calls carry their interrupt.
    cancelled: threading.Event = field(default_factory=threading.Event)
    held: dict[int, StageModel] = field(default_factory=dict)
    runs: dict[int, RankRun] = field(default_factory=dict)  # generations, by key

    def execute(self, request: dict[str, Any]) -> bytes:
        """Rank 0's request, on this rank under the call's deadline (``budget``: the seconds
        the call had left when rank 0 sent it) and rank 0's cancel; rank 0 runs it under the
        call's own interrupt."""
        stoppable = request["op"] in STOPPABLE
        if self.group.rank() == 0 or request.get("budget") is None or not stoppable:
            return self._execute(request)
        budget = float(request["budget"])
        job = Interrupt(timeout=request.get("limit") or budget, cancelled=self.cancelled)
        job.deadline = time.monotonic() + budget
        set_interrupt(job)
        try:
            return self._execute(request)
        finally:
            set_interrupt(None)

    def _execute(self, request: dict[str, Any]) -> bytes:
        alive = set(request.get("alive", []))
        asked = {request.get("key"), request.get("run"), *request.get("keys", [])}
        for key in [k for k in self.held if k not in alive and k not in asked]:
            del self.held[key]
            gc.collect()
            mx.clear_cache()
        for key in [k for k in self.runs if k not in alive and k not in asked]:
            del self.runs[key]
        op = request["op"]
        if op == "load":
            return wire.to_json(self._load(request))
        if op == "lens":
            return run_lens(self.group, self.held[request["key"]], request)
        if op == "gen_start":
            self.runs[request["run"]] = start_run(self.group, self.held[request["key"]], request)
            return b""
        if op == "gen_step":
            return run_step(self.group, self.runs[request["run"]], request)
        if op == "attribute":
            return run_attribute(self.group, self.held[request["key"]], request)
        if op == "compare":
            sides = [self.held[k] for k in request["keys"]]
            return run_compare(self.group, sides, request)
        if op == "ping":
            return wire.to_json(
                {"rank": self.group.rank(), "rss": resident_bytes(), "sent": wire.TRAFFIC.sent}
            )
        raise ValueError(f"unknown request {op!r}")

    def _load(self, request: dict[str, Any]) -> dict[str, Any]:
        from lazarus_mcp.distributed.stage_load import load_stage

        before = resident_bytes()
        options = LoadOptions(dtype=request["dtype"], device=request["device"])
        try:
            loaded, split = load_stage(
                request["model"], options, self.group.rank(), self.group.size()
            )
        except LazarusError as exc:
            return {"ok": False, "error": one_line(exc), "kind": type(exc).__name__}
        except Exception as exc:
            return {"ok": False, "error": one_line(exc), "kind": "ModelLoadError"}
        self.held[request["key"]] = StageModel(loaded, split)
        gc.collect()
        return {
            "ok": True,
            "rank": self.group.rank(),
            "ranges": [list(r) for r in split.ranges],
            "weight_bytes": loaded.nbytes,
            "resident_bytes": resident_bytes() - before,
        }

    def held_model(self, key: int) -> StageModel:
        return self.held[key]
