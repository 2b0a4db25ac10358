"""Limits on what one request may cost, checked before the work, and the per-call deadline.

Every caller is untrusted (an agent pastes whole documents, retries in loops, may be prompt
injected), so each resource a request can grow is bounded here, in the core, and the MCP server,
the CLI and the Python API share the numbers. What the limits protect, measured on what landed
before them: a 300,000-character prompt grew the server to 4-6 GB and killed it; a config
claiming 100,000 blocks made mlx-lm allocate 8 GB before any weight was read; a 30,000-character
prompt took 26 s and 1.2 GB for the attention matrix alone. See docs/security.md.

The deadline is the one piece of state: a call (one tool call, one CLI command, one API method)
carries one :class:`Interrupt` (its deadline and whether its caller gave up) through every job it
puts on the MLX worker, its statistics, serialization and pictures. The clock starts when the
call's first job starts on the worker, so a call queued behind another is never charged for that
one's overrun. Core loops call :func:`check_interrupt` between blocks and chunks, so a call that
runs too long or is cancelled ends there and frees the worker for the next one.

This module is a leaf: it imports nothing of the project but ``errors``, so every layer may use it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from lazarus_mcp.errors import InvalidRequestError, LazarusError


class LimitExceededError(InvalidRequestError):
    """The request would exceed a configured limit (the message names it and both numbers)."""


class CallInterrupted(LazarusError):
    """The call passed its deadline or its caller cancelled it; the worker is free again."""


def physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _default_budget() -> int | None:
    total = physical_memory()
    return None if total is None else int(total * 0.6)


@dataclass(frozen=True)
class Limits:
    """What one request may cost. ``None`` turns a limit off (for people on their own machine).

    Defaults keep a request on a 16 GB laptop within a few seconds and a few hundred MB beyond
    the weights; the CLI and the server may raise them with flags.
    """

    # Characters of a prompt, checked before tokenizing (tokenizing itself costs memory).
    max_prompt_chars: int | None = 100_000
    # Tokens of a prompt (the text after the chat template); also bounded by the model's context.
    max_prompt_tokens: int | None = 4096
    # Bytes the weights plus the largest forward pass may take (default: 60% of physical RAM).
    memory_budget: int | None = field(default_factory=_default_budget)
    # Seconds one call may run on the worker, checked between the forward pass's blocks.
    call_timeout: float | None = 300.0
    # Characters of one tracked-token string (a target, a foil), and how many may be tracked.
    max_token_chars: int = 256
    max_tracked_tokens: int = 32
    # Attribution targets (each one is a [components] row of the result).
    max_targets: int = 16
    max_layers_listed: int = 4096
    max_positions_listed: int = 4096
    # Top tokens per lens row: an agent reads a handful; 100 is already a page per layer.
    max_top_k: int = 100
    # Prompts of one batch call.
    max_prompts: int = 256
    # Estimated bytes of the result's JSON (cells x (top_k + tracked) entries), checked before
    # any compute: a 4,081-token grid was one 368 MB JSON-RPC line and kept 4 GB resident.
    max_result_bytes: int | None = 32 * 2**20
    # Cells (rows x positions) of a heatmap: more are not legible (and cost seconds to draw).
    max_plot_cells: int = 6000
    # Files of a checkpoint read as text (config, tokenizer, chat template): bytes each.
    max_config_bytes: int = 4 * 2**20
    max_tokenizer_bytes: int = 256 * 2**20
    max_template_bytes: int = 1 * 2**20
    # Nesting of config.json: real configs are 3-4 deep.
    max_config_depth: int = 32
    # The chat template: seconds to render, characters it may produce, bytes it may allocate.
    template_timeout: float = 5.0
    max_template_output: int = 1_000_000
    template_memory: int = 512 * 2**20
    # Calls waiting for the worker at once before new ones are answered "busy".
    max_queued_calls: int = 64
    # The model's own string (a path or an id).
    max_model_chars: int = 1024
    # Largest magnitude of a float argument (embedding_scale): keeps activations finite.
    max_float_arg: float = 1e4
    # fnmatch patterns a model's name or real path must match (--allow-model); empty: any.
    allowed_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitFlag:
    """A command-line flag that sets one field of :class:`Limits`: the one declaration from which
    both the CLI (``lazarus_cli/options.py``) and the server (``lazarus-mcp``) make their flags."""

    option: str  # the parameter's name; the flag is --option-with-dashes
    target: str  # the Limits field it sets
    kind: type[int] | type[float]
    what: str  # what it bounds, for the help text (which appends the default)
    minimum: float = 1
    factor: int = 1  # from the flag's unit to the field's (MiB -> bytes)

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    @property
    def help(self) -> str:
        default = getattr(Limits(), self.target)
        shown = "none" if default is None else f"{default / self.factor:g}"
        return f"{self.what} (default {shown})."


LIMIT_FLAGS = (
    LimitFlag("max_prompt_tokens", "max_prompt_tokens", int, "Longest prompt, in tokens"),
    LimitFlag("max_prompt_chars", "max_prompt_chars", int, "Longest prompt, in characters"),
    LimitFlag("call_timeout", "call_timeout", float, "Seconds one call may compute", minimum=0.1),
    LimitFlag("max_top_k", "max_top_k", int, "Most top tokens per lens row"),
    LimitFlag("max_tracked_tokens", "max_tracked_tokens", int, "Most tracked tokens per call"),
    LimitFlag("max_targets", "max_targets", int, "Most attribution targets per call"),
    LimitFlag(
        "max_result_mb", "max_result_bytes", int, "Largest result, in MiB of JSON", factor=2**20
    ),
)


def with_flags(base: Limits, given: Mapping[str, Any]) -> Limits:
    """``base`` with the fields the given :data:`LIMIT_FLAGS` values set (``None``: not given)."""
    changes = {
        flag.target: given[flag.option] * flag.factor
        for flag in LIMIT_FLAGS
        if given.get(flag.option) is not None
    }
    return replace(base, **changes) if changes else base


_lock = threading.Lock()
_current = Limits()


def current() -> Limits:
    """The process's limits (set by the server or the CLI at start; the API's defaults else)."""
    with _lock:
        return _current


def configure(limits: Limits) -> None:
    global _current
    with _lock:
        _current = limits


# Checks on a request, before any work -----------------------------------------------------


def check_prompt_chars(prompt: str, limits: Limits | None = None) -> None:
    limit = (limits or current()).max_prompt_chars
    if limit is not None and len(prompt) > limit:
        raise LimitExceededError(
            f"the prompt has {len(prompt):,} characters, more than this server's limit of "
            f"{limit:,} (max_prompt_chars); shorten it"
        )


def check_prompt_tokens(
    count: int,
    context: int | None,
    limits: Limits | None = None,
    *,
    context_key: str = "max_position_embeddings",
) -> None:
    """Refuse a prompt beyond the model's context or the server's limit, naming both (and the
    config key the context comes from: GPT-2 says n_positions)."""
    limit = (limits or current()).max_prompt_tokens
    bounds = [b for b in (context, limit) if b is not None]
    if not bounds or count <= min(bounds):
        return
    where = f" ({context_key})" if context_key else ""
    model = f"the model's context is {context:,}{where}" if context else ""
    server = f"this server's limit is {limit:,} (--max-prompt-tokens)" if limit else ""
    both = "; ".join(part for part in (model, server) if part)
    raise LimitExceededError(f"the prompt is {count:,} tokens, too long: {both}; shorten it")


def check_tracked(
    tokens: list[str], limits: Limits | None = None, *, what: str = "tracked token"
) -> None:
    lim = limits or current()
    most = lim.max_targets if what == "target" else lim.max_tracked_tokens
    if len(tokens) > most:
        raise LimitExceededError(f"{len(tokens):,} {what}s, more than the limit of {most}")
    for token in tokens:
        check_token_string(token, lim, what=what)


def check_token_string(token: str, limits: Limits | None = None, *, what: str = "token") -> None:
    limit = (limits or current()).max_token_chars
    if len(token) > limit:
        raise LimitExceededError(
            f"a {what} string has {len(token):,} characters, more than the limit of "
            f"{limit} (a token is a word or a piece of one)"
        )


def check_count(what: str, count: int, limit: int | None, option: str = "") -> None:
    """A list or number the caller chose, against its cap (named, with both numbers)."""
    if limit is not None and count > limit:
        hint = f" ({option})" if option else ""
        raise LimitExceededError(f"{count:,} {what}, more than the limit of {limit:,}{hint}")


def check_result_bytes(what: str, need: int, limits: Limits | None = None) -> None:
    """Refuse a result whose estimated JSON exceeds the response budget, before computing it."""
    budget = (limits or current()).max_result_bytes
    if budget is not None and need > budget:
        raise LimitExceededError(
            f"{what} would be about {need / 2**20:,.1f} MiB of JSON, more than the response "
            f"limit of {budget / 2**20:,.0f} MiB (--max-result-mb): ask for fewer positions, "
            "layers, prompts, top_k or tracked tokens"
        )


def check_float_arg(name: str, value: float | None, limits: Limits | None = None) -> None:
    if value is None:
        return
    bound = (limits or current()).max_float_arg
    if not math.isfinite(value) or not 0 < value <= bound:
        raise LimitExceededError(f"{name} must be a finite number in (0, {bound:g}], not {value!r}")


def check_model_string(model_id: str, limits: Limits | None = None) -> None:
    limit = (limits or current()).max_model_chars
    if len(model_id) > limit:
        raise LimitExceededError(
            f"the model name has {len(model_id):,} characters, more than the limit of {limit}"
        )
    if any(ord(c) < 32 or c == "\x7f" for c in model_id):
        raise LimitExceededError("the model name contains control characters")


def check_memory(what: str, need: int, limits: Limits | None = None, held: int = 0) -> None:
    """Refuse work whose estimated bytes (plus ``held``, already in use) exceed the budget."""
    budget = (limits or current()).memory_budget
    if budget is not None and need + held > budget:
        extra = f" with {held / 2**20:,.0f} MiB already held" if held else ""
        raise LimitExceededError(
            f"{what} needs about {need / 2**20:,.0f} MiB{extra}, more than the memory budget of "
            f"{budget / 2**20:,.0f} MiB (--memory-budget)"
        )


# The deadline of the job running on this thread --------------------------------------------


@dataclass
class Interrupt:
    """A job's deadline (monotonic seconds) and whether its caller gave up on it."""

    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    timeout: float | None = None
    # What the call's jobs compute once and share (the gate's encodings of the prompts, which
    # the analysis would otherwise redo: a chat template renders in a forked child, ~0.1 s).
    memo: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def after(cls, seconds: float | None) -> Interrupt:
        """A deadline ``seconds`` after the call's first job starts (see :meth:`begin`)."""
        return cls(timeout=seconds)

    def begin(self) -> None:
        """Start the clock, once: when the call's first job starts on the worker (the time it
        waited behind another call's job is not its own)."""
        if self.deadline is None and self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def expired(self) -> bool:
        if self.cancelled.is_set():
            return True
        return self.deadline is not None and time.monotonic() > self.deadline

    def check(self) -> None:
        if self.cancelled.is_set():
            raise CallInterrupted("the call was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CallInterrupted(
                f"the call ran past its time limit of {self.timeout:g} s (--call-timeout) and "
                "was stopped; try a shorter prompt or fewer layers"
            )

    def remaining(self) -> float | None:
        if self.deadline is None:
            return self.timeout
        return max(0.0, self.deadline - time.monotonic())

    @property
    def active(self) -> bool:
        return self.deadline is not None or self.timeout is not None or self.cancelled.is_set()


_local = threading.local()


def set_interrupt(interrupt: Interrupt | None) -> None:
    _local.interrupt = interrupt


def interrupt() -> Interrupt | None:
    """The interrupt of the job running on this thread, if any."""
    return getattr(_local, "interrupt", None)


def call_memo() -> dict[Any, Any] | None:
    """The memo of the call whose job runs on this thread (None outside a job)."""
    job = interrupt()
    return None if job is None else job.memo


def check_interrupt() -> None:
    """Raise :class:`CallInterrupted` if the job on this thread is past its deadline or
    cancelled; a no-op outside a job with a deadline."""
    current_interrupt = interrupt()
    if current_interrupt is not None:
        current_interrupt.check()


# The deadline of the call in progress (an asyncio/anyio task and what it awaits) --------------

_call: ContextVar[Interrupt | None] = ContextVar("lazarus_call", default=None)


def current_call() -> Interrupt | None:
    """The interrupt of the call this task is serving (set by :func:`call_deadline`), if any."""
    return _call.get()


@contextmanager
def call_deadline(seconds: float | None = None) -> Iterator[Interrupt]:
    """One deadline for the whole call: every worker job the call starts inside this block, and
    the serialization and pictures after them, share it. A nested block joins the outer call."""
    outer = _call.get()
    if outer is not None:
        yield outer
        return
    job = Interrupt.after(current().call_timeout if seconds is None else seconds)
    token = _call.set(job)
    try:
        yield job
    finally:
        _call.reset(token)


@contextmanager
def within(job: Interrupt) -> Iterator[Interrupt]:
    """Continue ``job``'s call (its serialization, its pictures) after its block has ended."""
    token = _call.set(job)
    try:
        yield job
    finally:
        _call.reset(token)


def check_interrupt_of_call() -> None:
    """Between the steps of a call off the worker (serialization, pictures): stop past its
    deadline or once cancelled."""
    job = current_call()
    if job is not None:
        job.check()
