"""Training a tuned lens (Belrose et al. 2023) in MLX, with the paper's optimizer and loss.

One affine translator per residual stream (the embedding output and blocks 0..N-2), starting at
zero (the logit lens), trained to minimise KL(model output || lens) at every position, summed
over layers. The recipe is tuned-lens 0.2.0's defaults: SGD with Nesterov momentum 0.9 and
learning rate 0.1 (the package passes ``1.0 * (1 - 0.9)``), weight decay 1e-3, the learning rate
decayed linearly to zero over the run without warmup, gradients clipped to norm 1. The paper
trains 250 steps of 2^18 tokens; on 2 CPU cores a step of a few hundred tokens is what fits, and
the number of steps is the caller's.

Each step runs the model's own forward once (``lens/taps.py``: every block's output at every
position, and the model's own logits) and then, layer by layer, the translator's gradient through
the model's final norm and unembedding; the layers' losses are independent, so one layer's graph
is alive at a time. The cost is dominated by the unembedding: ``6 * V * D`` FLOPs per token per
layer (SmolLM2-135M: 170 MFLOP, 5.3 GFLOP per token over 31 layers).

Progress per step, a checkpoint (translators, momentum, step) every ``checkpoint_every`` steps,
resume from it, and a time budget after which training stops early and the lens is kept.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lens.taps import tapped_forward
from lazarus_mcp.lenses.safetensors_io import read_tensors, write_tensors
from lazarus_mcp.runtime.limits import check_interrupt

CHECKPOINT = ".train-checkpoint"


@dataclass(frozen=True)
class TunedRecipe:
    steps: int = 100
    batch_sequences: int = 2
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-3
    clip_norm: float = 1.0
    seed: int = 0


@dataclass
class TrainProgress:
    step: int
    steps: int
    loss: float  # summed over layers, nats


@dataclass
class TrainState:
    weight: mx.array  # [L, D, D]: translator l maps slot l (0: embedding, l: block l - 1)
    bias: mx.array  # [L, D]
    v_weight: mx.array
    v_bias: mx.array
    step: int = 0
    losses: list[float] = field(default_factory=list)

    @classmethod
    def zeros(cls, slots: int, d: int) -> TrainState:
        w, b = mx.zeros((slots, d, d)), mx.zeros((slots, d))
        return cls(w, b, mx.zeros_like(w), mx.zeros_like(b), 0, [])

    def save(self, folder: Path, digest: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"weight": self.weight, "bias": self.bias, "v_weight": self.v_weight}
        arrays["v_bias"] = self.v_bias
        write_tensors(folder / "state.safetensors", {k: np.array(v) for k, v in arrays.items()})
        tmp = folder / ".state.json.tmp"
        tmp.write_text(json.dumps({"digest": digest, "step": self.step, "losses": self.losses}))
        os.replace(tmp, folder / "state.json")

    @classmethod
    def resume(cls, folder: Path, digest: str, slots: int, d: int) -> TrainState | None:
        try:
            meta = json.loads((folder / "state.json").read_text())
            if meta.get("digest") != digest:
                return None
            t = read_tensors(folder / "state.safetensors", 2**34)
            arrays = [mx.array(t[k]) for k in ("weight", "bias", "v_weight", "v_bias")]
        except (OSError, ValueError, KeyError):
            return None
        if arrays[0].shape != (slots, d, d) or arrays[1].shape != (slots, d):
            return None
        weight, bias, v_weight, v_bias = arrays
        losses = [float(v) for v in meta.get("losses") or []]
        return cls(weight, bias, v_weight, v_bias, step=int(meta["step"]), losses=losses)


def kl_rows(target_logp: mx.array, logits: mx.array) -> mx.array:
    """KL(target || softmax(logits)) per row, nats, float32."""
    logq = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.sum(mx.exp(target_logp) * (target_logp - logq), axis=-1)


@dataclass
class Streams:
    """The residual streams of one batch of sequences, flattened over positions."""

    hidden: list[mx.array]  # per slot [M, D]: embedding output, then blocks 0..N-2
    target_logp: mx.array  # [M, V]: the model's own output, log-softmaxed


def capture(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    num_layers: int,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> Streams:
    """One forward of the model's own code over equally long ``sequences``."""
    ids = mx.array([list(s) for s in sequences])
    length = ids.shape[1]
    tapped = tapped_forward(
        model,
        ids,
        mx.arange(length)[None, :, None],
        outputs=range(num_layers - 1),
        inputs=(0,),
        embedding_factor=embedding_factor,
        windows=windows,
    )
    flat = [tapped.inputs[0]] + [tapped.outputs[i] for i in range(num_layers - 1)]
    hidden = [h.reshape(-1, h.shape[-1]).astype(mx.float32) for h in flat]
    logits = tapped.logits.reshape(-1, tapped.logits.shape[-1]).astype(mx.float32)
    target = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    mx.eval(hidden, target)
    return Streams(hidden, target)


def _layer_loss(
    head: LensHead, weight: mx.array, bias: mx.array, hidden: mx.array, target: mx.array
) -> mx.array:
    return mx.mean(kl_rows(target, head(hidden + hidden @ weight.T + bias)))


def _step(head: LensHead, state: TrainState, streams: Streams, recipe: TunedRecipe) -> float:
    grad_fn = mx.value_and_grad(lambda w, b, h, t: _layer_loss(head, w, b, h, t), argnums=(0, 1))
    grads_w, grads_b, total = [], [], 0.0
    for slot, hidden in enumerate(streams.hidden):
        loss, (gw, gb) = grad_fn(state.weight[slot], state.bias[slot], hidden, streams.target_logp)
        mx.eval(loss, gw, gb)
        grads_w.append(gw)
        grads_b.append(gb)
        total += float(loss)
        check_interrupt()
    gw_all, gb_all = mx.stack(grads_w), mx.stack(grads_b)
    norm = mx.sqrt(mx.sum(gw_all * gw_all) + mx.sum(gb_all * gb_all))
    scale = mx.minimum(1.0, recipe.clip_norm / (norm + 1e-6))
    lr = recipe.lr * max(0.0, (recipe.steps - state.step) / recipe.steps)
    new = []
    for param, grad, velocity in (
        (state.weight, gw_all * scale, state.v_weight),
        (state.bias, gb_all * scale, state.v_bias),
    ):
        grad = grad + recipe.weight_decay * param
        velocity = recipe.momentum * velocity + grad
        new.append((param - lr * (grad + recipe.momentum * velocity), velocity))
    (state.weight, state.v_weight), (state.bias, state.v_bias) = new
    mx.eval(state.weight, state.bias, state.v_weight, state.v_bias)
    state.step += 1
    return total


def train_tuned(
    model: nn.Module,
    head: LensHead,
    batches: Callable[[int], list[list[int]]],
    num_layers: int,
    d_model: int,
    recipe: TunedRecipe,
    digest: str,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 10,
    time_budget: float | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainState:
    """Train from zero (or resume); ``batches(step)`` gives that step's sequences, so a resumed
    run sees the same data as an uninterrupted one. Stops early when ``time_budget`` (seconds)
    would be exceeded by another step."""
    slots = num_layers
    state = None
    if checkpoint is not None:
        state = TrainState.resume(checkpoint, digest, slots, d_model)
    if state is None:
        state = TrainState.zeros(slots, d_model)
    started = time.monotonic()
    step_time = 0.0
    while state.step < recipe.steps:
        if time_budget is not None and time.monotonic() - started + step_time > time_budget:
            break
        began = time.monotonic()
        streams = capture(model, batches(state.step), num_layers, embedding_factor, windows)
        loss = _step(head, state, streams, recipe)
        state.losses.append(round(loss, 5))
        step_time = time.monotonic() - began
        if on_progress is not None:
            on_progress(TrainProgress(state.step, recipe.steps, loss))
        if checkpoint is not None and (state.step % checkpoint_every == 0):
            state.save(checkpoint, digest)
    if checkpoint is not None:
        state.save(checkpoint, digest)
    return state


__all__ = ["TunedRecipe", "train_tuned"]
