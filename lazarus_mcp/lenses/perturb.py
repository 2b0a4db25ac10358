"""The model's own forward with a perturbation added at block outputs, stopped after a block.

The Jacobian lens differentiates the last block's output with respect to earlier blocks'
outputs. Written as a function of additive perturbations ``delta_l`` at those outputs (all zero
at the point of evaluation), ``d out / d delta_l`` is exactly ``d out / d h_l``, and MLX's
``mx.vjp`` gives it through the model's own blocks: its masks, its rotary embeddings, its
quantized matmuls (the weights are constants; only the activations are differentiated). The
forward stops at the target block, so the final norm and the vocabulary projection, the largest
matmul of a small model, are never computed.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot
from lazarus_mcp.lens.taps import ScaledEmbedding, attention_masks


class _Reached(Exception):
    def __init__(self, value: mx.array) -> None:
        self.value = value


class _Perturbed:
    """Stands in for one block: its output plus ``delta``; raises at the target block."""

    def __init__(self, block: Any, mask: mx.array | None, stop: bool) -> None:
        self._block = block
        self._mask = mask
        self._stop = stop
        self.delta: mx.array | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        out = self._block(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        if self.delta is not None:
            hidden = hidden + self.delta
        if self._stop:
            raise _Reached(hidden)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


@contextmanager
def perturbable(
    model: nn.Module,
    length: int,
    sources: list[int],
    target: int,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> Iterator[Callable[[mx.array, list[mx.array]], mx.array]]:
    """While open: ``run(ids, deltas)`` -> the output of block ``target`` [B, T, D], with
    ``deltas[k]`` added to the output of block ``sources[k]``."""
    blocks = block_list(model)
    masks = attention_masks(length, windows or {}, len(blocks))
    wrapped = {i: _Perturbed(blocks[i], masks.get(i), stop=i == target) for i in range(target + 1)}
    with ExitStack() as stack:
        for i, block in wrapped.items():
            original = blocks[i]
            blocks[i] = block
            stack.callback(blocks.__setitem__, i, original)
        if embedding_factor != 1.0:
            holder, key = embedding_slot(model)
            original_embedding = holder[key]
            holder[key] = ScaledEmbedding(original_embedding, embedding_factor)
            stack.callback(holder.__setitem__, key, original_embedding)

        def run(ids: mx.array, deltas: list[mx.array]) -> mx.array:
            for layer, delta in zip(sources, deltas, strict=True):
                wrapped[layer].delta = delta
            try:
                model(ids)
            except _Reached as reached:
                return reached.value
            finally:
                for layer in sources:
                    wrapped[layer].delta = None
            raise RuntimeError(f"the model's forward never reached block {target}")

        yield run
