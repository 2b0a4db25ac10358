"""Taps on the model's own forward pass: the residual stream after selected blocks, with the
masks the architecture prescribes where a port ignores them (``masks``) and the embedding scale
the forward applies (``embedding_scale``).

Nothing here re-implements a forward: blocks are wrapped in place for one call and restored.
Every forward of the lens (one position, a grid of positions x layers over a padded batch,
``subtaps``' sub-layer states, ``step``'s tokens over a KV cache, a pipeline rank's blocks, the
Jacobian lens's perturbed and differentiated forward) is one :func:`tapped_forward` with every
block wrapped by the one :class:`_Block`, which also checks the call's deadline and
cancellation after each block (except in a forward that ``mx.vjp`` traces: ``Stage.add``).
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.lens.embedding_scale import ScaledEmbedding
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot, swapped
from lazarus_mcp.lens.interrupt import interrupt as current_interrupt
from lazarus_mcp.lens.masks import attention_masks, step_masks


class _Block:
    """Stands in for one block for one forward pass; the only block wrapper of the lens.

    It may hand the block another attention mask, keep the block's input, the input of one of
    its modules (``mid``: the state between its attention and MLP sub-layers, ``subtaps``) and
    its output, each at the gathered positions (``index`` [B, P, 1], broadcast over the batch;
    None: every position), add an array to its output (``add``: the Jacobian lens's
    perturbation, which ``mx.vjp`` differentiates by);
    on the last block (``truncate``) it hands on only those positions, so the model's own final
    norm, unembedding and soft-cap run on [B, P, D] instead of the whole sequence. After the
    block it checks the job's deadline and cancellation (``_between_blocks``).
    """

    def __init__(
        self,
        block: nn.Module,
        index: mx.array | None,
        keep_input: bool = False,
        keep_output: bool = False,
        mid: str | None = None,
        truncate: bool = False,
        mask: mx.array | None = None,
        every_index: mx.array | None = None,
        receive: Callable[[mx.array], mx.array] | None = None,
        send: Callable[[mx.array], mx.array] | None = None,
        add: mx.array | None = None,
        check: bool = True,
    ) -> None:
        self._block = block
        self._add = add
        self._check = check
        self._receive = receive
        self._send = send
        self._index = index
        self._every_index = every_index
        self._keep_input = keep_input
        self._keep_output = keep_output
        self._mid = mid
        self._truncate = truncate
        self._mask = mask
        self.input: mx.array | None = None
        self.mid: mx.array | None = None
        self.output: mx.array | None = None
        self.every: mx.array | None = None

    def _gather(self, hidden: mx.array) -> mx.array:
        return hidden if self._index is None else mx.take_along_axis(hidden, self._index, axis=1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        if self._receive is not None:
            args = (self._receive(args[0]), *args[1:])
        if self._keep_input:
            self.input = self._gather(args[0])
        if self._mid is None:
            out = self._block(*args, **kwargs)
        else:
            keep = _KeepInput(self._block[self._mid], self._gather)
            with swapped(self._block, self._mid, keep):
                out = self._block(*args, **kwargs)
            self.mid = keep.captured
        if self._add is not None:
            out = _replace_hidden(out, (out[0] if isinstance(out, tuple) else out) + self._add)
        if self._send is not None:
            out = _replace_hidden(out, self._send(out[0] if isinstance(out, tuple) else out))
        if self._check:
            _between_blocks(out)
        hidden = out[0] if isinstance(out, tuple) else out
        if self._every_index is not None:
            self.every = mx.take_along_axis(hidden, self._every_index, axis=1)
        if not (self._keep_output or self._truncate):
            return out
        kept = self._gather(hidden)
        if self._keep_output:
            self.output = kept
        if not self._truncate:
            return out
        return (kept, *out[1:]) if isinstance(out, tuple) else kept

    def __getattr__(self, name: str) -> Any:
        # The model's loop may read block attributes (e.g. ``use_sliding``).
        return getattr(self._block, name)


def _replace_hidden(out: Any, hidden: mx.array) -> Any:
    return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


class _Elsewhere:
    """Stands in for a block another pipeline stage runs (:class:`Stage`): hands its input on.

    Its weights are not loaded here; the stream it passes is replaced where this stage's first
    block receives the real one, so only its shape matters. As the model's last block it keeps
    only the gathered positions, so the head after it runs on [B, P, D]. The model's loop may
    read block attributes (``use_sliding``): they come from the block it stands in for."""

    def __init__(self, block: Any, index: mx.array | None, truncate: bool) -> None:
        self._block = block
        self._index = index
        self._truncate = truncate

    def __call__(self, hidden: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        if not self._truncate or self._index is None:
            return hidden
        return mx.take_along_axis(hidden, self._index, axis=1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage's part of the forward: blocks ``first`` .. ``end`` - 1 run here.

    ``receive`` gives the stream entering block ``first`` (from the previous stage) in place of
    what the model's forward computed up to it; ``send`` hands block ``end`` - 1's output to the
    next stage and returns an array that performs the send when evaluated. The rest of the
    model's own forward still runs here (its masks, positions, embedding scale); the blocks of
    other stages pass the stream through (:class:`_Elsewhere`). Tensor parallelism would shard
    inside each block and keep the whole range (``lazarus_mcp/distributed``).

    ``add`` {block: array [B, T, D]} is added to those blocks' outputs. The Jacobian lens
    (``lenses/jacobian_fit``) differentiates the output of block ``end`` - 1 with respect to
    these perturbations (zero where evaluated: ``d out / d add_l`` is ``d out / d h_l``) through
    the model's own blocks, its masks, rotary embeddings and quantized matmuls, as a stage
    ``0 .. target``: nothing after the target block is computed (the blocks after it pass the
    stream on and the head's output is never evaluated). ``mx.vjp`` and ``mx.vmap`` trace such a
    forward, so it is not evaluated between blocks: its caller checks the deadline between
    its row batches."""

    first: int
    end: int
    receive: Callable[[mx.array], mx.array] | None = None
    send: Callable[[mx.array], mx.array] | None = None
    add: Mapping[int, mx.array] = field(default_factory=dict)


class _KeepInput:
    """Stands in for a module inside a block; keeps its first argument, gathered."""

    def __init__(self, module: Any, gather: Callable[[mx.array], mx.array]) -> None:
        self._module = module
        self._gather = gather
        self.captured: mx.array | None = None

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> Any:
        self.captured = self._gather(x)
        return self._module(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _between_blocks(out: Any) -> None:
    """With a deadline or a cancellable caller: compute this block now and check the job.

    MLX is lazy: without the eval the whole forward would run at the final ``mx.eval``, after
    the last chance to stop it. The eval changes when, not what, is computed. Every forward of
    the lens runs through :class:`_Block`, so this is the one place a call is stopped.
    """
    job = current_interrupt()
    if job is not None:
        mx.eval(out[0] if isinstance(out, tuple) else out)
        job.check()


@dataclass
class Tapped:
    """What one tapped forward kept, per block, each [B, P, D] at the gathered positions."""

    inputs: dict[int, mx.array]
    mids: dict[int, mx.array]
    outputs: dict[int, mx.array]
    logits: mx.array  # [B, P, V]: the model's own output at the gathered positions
    every: dict[int, mx.array] = field(default_factory=dict)  # block -> [B, 1, D] at every_at


def tapped_forward(
    model: nn.Module,
    ids: mx.array,
    index: mx.array | None,
    outputs: Collection[int] = (),
    inputs: Collection[int] = (),
    mid: str | None = None,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    cache: list[Any] | None = None,
    every_at: mx.array | None = None,
    stage: Stage | None = None,
) -> Tapped:
    """One forward pass of the model's own code over ``ids`` [B, T] with every block wrapped.

    ``index`` [B or 1, P, 1]: the positions kept of each row (None: every position). Kept: the
    output of the blocks in ``outputs``, the input of those in ``inputs``, and with ``mid`` the
    input of that module in every block. The last block hands on only the kept positions, so
    ``logits`` is [B, P, V].
    With ``every_at`` [B or 1, 1, 1], every block's output is also kept at that one position
    (``every``): the milestones read every block there, whichever blocks are displayed.

    With ``cache`` (the model's own, ``mlx_lm.models.cache.make_prompt_cache``; see ``step``)
    ``ids`` are the next tokens after those already in the cache, ``index`` counts from the
    first of them, and the cache is extended in place. The masks are the model's own except on
    blocks whose full KV cache the port would mask without the family's window.

    With ``stage``, only its blocks run here (and only theirs can be kept); ``logits`` is the
    model's output only on the stage that runs the last block.
    """
    blocks = block_list(model)
    last = len(blocks) - 1
    first, end = (stage.first, stage.end) if stage is not None else (0, len(blocks))
    if mid is not None:
        for i in range(first, end):
            if mid not in blocks[i]:
                raise UnsupportedModelError(
                    f"block {i} has no '{mid}' module to read its attention output by"
                )
    if cache is None:
        masks = attention_masks(ids.shape[1], windows or {}, len(blocks))
    else:
        masks = step_masks(cache, ids.shape[1], windows or {})
    # Every block is wrapped, so a call can be stopped between any two (runtime/limits.py).
    wrapped: list[_Block | _Elsewhere] = [
        _Block(
            blocks[i],
            index,
            keep_input=i in inputs,
            keep_output=i in outputs,
            mid=mid,
            truncate=i == last,
            mask=masks.get(i),
            every_index=every_at,
            receive=stage.receive if stage is not None and i == first else None,
            send=stage.send if stage is not None and i == end - 1 else None,
            add=stage.add.get(i) if stage is not None else None,
            check=stage is None or not stage.add,
        )
        if first <= i < end
        else _Elsewhere(blocks[i], index, truncate=i == last)
        for i in range(len(blocks))
    ]
    with ExitStack() as stack:
        for i, block in enumerate(wrapped):
            stack.enter_context(swapped(blocks, i, block))
        if embedding_factor != 1.0:
            holder, key = embedding_slot(model)
            scaled = ScaledEmbedding(holder[key], embedding_factor)
            stack.enter_context(swapped(holder, key, scaled))
        logits = model(ids) if cache is None else model(ids, cache=cache)
    tapped = Tapped({}, {}, {}, logits)
    if every_at is not None:
        for i, block in enumerate(wrapped):
            if not isinstance(block, _Block):
                continue  # another stage's block (``Stage``)
            if block.every is None:
                raise RuntimeError(f"the model's forward never ran block {i} as a whole")
            tapped.every[i] = block.every
    for i, block in enumerate(wrapped):
        if not isinstance(block, _Block):
            continue
        kept = [
            (tapped.inputs, block.input, i in inputs),
            (tapped.mids, block.mid, mid is not None),
            (tapped.outputs, block.output, i in outputs),
        ]
        for into, value, wanted in kept:
            if not wanted:
                continue
            if value is None:
                raise RuntimeError(f"the model's forward never ran block {i} as a whole")
            into[i] = value
    return tapped


def pad_batch(batch: list[list[int]], pad_id: int = 0) -> mx.array:
    """Right-padded token ids [B, T].

    A causal model never lets a token see a later one, so each row's tokens attend to exactly
    the keys they attend to alone, at the same RoPE positions and inside the same sliding
    windows: the padding needs no mask of its own, and each row's residual stream equals its
    single-row stream up to float rounding (the matmuls see other shapes; measured below 1e-6
    on the parity checkpoints). Left padding would shift every RoPE position."""
    width = max(len(ids) for ids in batch)
    return mx.array([ids + [pad_id] * (width - len(ids)) for ids in batch])


def position_index(positions: list[list[int]]) -> mx.array:
    """[B, P, 1] gather indices; shorter rows repeat their last position (ignored later)."""
    width = max(len(p) for p in positions)
    return mx.array([p + [p[-1]] * (width - len(p)) for p in positions])[..., None]


def forward_with_taps(
    model: nn.Module,
    token_ids: list[int],
    layers: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> tuple[dict[int, mx.array], mx.array]:
    """One forward pass; returns {block: hidden [D]} at the last position and the final logits [V].

    The final logits are the model's own (its norm, head and soft-cap), at that position.
    """
    position = len(token_ids) - 1
    tapped = tapped_forward(
        model,
        mx.array([token_ids]),
        mx.array([[[position]]]),
        outputs=layers,
        embedding_factor=embedding_factor,
        windows=windows,
    )
    captured = {i: hidden[0, 0] for i, hidden in tapped.outputs.items()}
    return captured, tapped.logits[0, -1]
