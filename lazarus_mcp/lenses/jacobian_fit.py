"""The Jacobian lens's estimator (Gurnee et al. 2026), as TransformerLens's ``JacobianLens.fit``
and Anthropic's reference implementation compute it, in MLX.

For each source block ``l`` the lens is one D x D matrix

    J_l = mean over prompts of  1/|V| * sum_{t in V} sum_{t' in V}  d h_final[t'] / d h_l[t]

where ``h_final`` is the last block's output (before the final norm), ``V`` the positions
``skip_first .. T-2`` of the prompt (the first ``skip_first`` = 16 are attention sinks, the
last has no next-token target) and ``T`` at most ``max_seq_len`` = 128. Target positions are
summed, source positions averaged, prompts averaged with equal weight; prompts with no valid
position are skipped and not counted. Deterministic given the prompts.

Row ``i`` of every ``J_l`` comes from one vector-Jacobian product: a cotangent that is one-hot on
dimension ``i`` at every valid target position, pulled back through the model's own blocks
(:func:`perturbed`: the engine's one tapped forward as a stage that ends at the target block,
with perturbations added at the source blocks' outputs) to each source block. ``mx.vmap`` over
a batch of such cotangents runs the forward once per batch and the backward batched, so the cost
is one forward per ``dim_batch`` rows plus D backward passes per prompt (MLX cannot vmap a
quantized matmul: a quantized model repeats the prompt per row instead, as TransformerLens
does, and runs the forward per row).
The backward passes are the estimator's inherent price: about
``2 * D * (non-embedding parameters)`` FLOPs per token (SmolLM2-135M: 122 GFLOP per token, 131
with the forwards and the attention's products), which no batching removes: at the float32
sgemm peak of 2 cores (95-137 GFLOP/s measured) that is 44-63 tokens a minute
(``examples/bench_jacobian_fit.py``; docs/lenses.md).

Progress is reported per batch of rows; the call's deadline is checked between batches; the
running sums are checkpointed after every prompt, so an interrupted fit resumes where it stopped.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens.taps import Stage, tapped_forward
from lazarus_mcp.lenses.safetensors_io import read_tensors, write_tensors
from lazarus_mcp.runtime.limits import check_interrupt

SKIP_FIRST = 16
MAX_SEQ_LEN = 128
DIM_BATCH = 32
CHECKPOINT = ".fit-checkpoint"


@dataclass(frozen=True)
class JacobianSettings:
    sources: tuple[int, ...]
    target: int
    skip_first: int = SKIP_FIRST
    max_seq_len: int = MAX_SEQ_LEN
    dim_batch: int = DIM_BATCH


@dataclass
class FitProgress:
    prompt: int  # prompts finished or skipped, of ``prompts``
    prompts: int
    rows: int  # rows of the current prompt done, of ``d_model``
    d_model: int


def prompt_digest(token_lists: Sequence[Sequence[int]], settings: JacobianSettings) -> str:
    """What a checkpoint must match to be resumed: the prompts' tokens and the settings."""
    digest = hashlib.sha256(json.dumps(asdict(settings)).encode())
    for ids in token_lists:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def activation_bytes(length: int, d_model: int, num_layers: int, dim_batch: int) -> int:
    """Rough peak of one batched backward: per block, about 12 [B, T, D] float32 buffers (the
    attention and MLP intermediates the VJP keeps), plus the [D, D] sums per layer."""
    per_block = 12 * dim_batch * length * d_model * 4
    return per_block * num_layers + 2 * num_layers * d_model * d_model * 8


Run = Callable[[mx.array, list[mx.array]], mx.array]


def perturbed(
    model: nn.Module,
    sources: Sequence[int],
    target: int,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> Run:
    """``run(ids, deltas)`` -> the output of block ``target`` [B, T, D] at every position, with
    ``deltas[k]`` [B, T, D] added to the output of block ``sources[k]``: the model's own forward
    through the engine's tapped forward (``lens.taps.Stage.add``), stopped at the target (the
    final norm and the vocabulary projection, a small model's largest matmul, never run)."""

    def run(ids: mx.array, deltas: list[mx.array]) -> mx.array:
        stage = Stage(0, target + 1, add=dict(zip(sources, deltas, strict=True)))
        tapped = tapped_forward(
            model,
            ids,
            None,
            outputs=[target],
            embedding_factor=embedding_factor,
            windows=windows,
            stage=stage,
        )
        return tapped.outputs[target]

    return run


Rows = Callable[[mx.array, mx.array, mx.array], list[mx.array]]


def row_batches(run: Run, sources: int, dtype: mx.Dtype) -> Rows:
    """``rows(tokens [1, T], valid [T], cotangents [R, 1, T, D])`` -> per source block [R, D]:
    each cotangent pulled back to every source block's output and summed over the valid
    positions. ``mx.vmap`` batches the R backward passes (the forward, which does not depend on
    the cotangent, runs once per call) and ``mx.compile`` makes the whole batched forward and
    backward one graph, traced once per prompt length instead of rebuilt in Python per batch
    of rows. Bitwise the same rows; on SmolLM2-135M (a batch of 32 rows over 128 tokens) it
    saved a few per cent: 15.8-16.3 CPU-s per batch against 16.2-17.0 uncompiled, about 57 GFLOP
    per CPU-second either way, which is this CPU's float32 sgemm rate per core: the batched
    backward's matmuls ([32 x 128, 576] by the blocks' weights) already run at the BLAS peak."""

    def rows(tokens: mx.array, valid: mx.array, cotangent: mx.array) -> list[mx.array]:
        zeros = [mx.zeros(cotangent.shape, dtype=dtype) for _ in range(sources)]
        _, grads = mx.vjp(lambda *deltas: run(tokens, list(deltas)), zeros, [cotangent])
        return [(g[0].astype(mx.float32) * valid[:, None]).sum(axis=0) for g in grads]

    compiled: Rows = mx.compile(mx.vmap(rows, in_axes=(None, None, 0)))
    return compiled


def replicated_rows(run: Run, sources: int, dtype: mx.Dtype) -> Rows:
    """The same rows without vmap (MLX has none for quantized matmuls): the prompt repeated per
    row, as TransformerLens batches it; the forward then runs once per row instead of per
    batch."""

    def rows(tokens: mx.array, valid: mx.array, cotangents: mx.array) -> list[mx.array]:
        n = cotangents.shape[0]
        copies = mx.repeat(tokens, n, axis=0)
        zeros = [mx.zeros(cotangents[:, 0].shape, dtype=dtype) for _ in range(sources)]
        _, grads = mx.vjp(lambda *deltas: run(copies, list(deltas)), zeros, [cotangents[:, 0]])
        return [(g.astype(mx.float32) * valid[None, :, None]).sum(axis=1) for g in grads]

    return rows


def _prompt_rows(
    engines: list[Rows],
    ids: list[int],
    settings: JacobianSettings,
    d_model: int,
    dtype: mx.Dtype,
    on_rows: Callable[[int], None],
) -> list[np.ndarray]:
    """One prompt's D rows of every J_l, a batch of ``dim_batch`` rows at a time (the last batch
    padded with zero cotangents, so every batch has the compiled shape). ``engines``: the rows
    function to use, first; a quantized model's vmap refusal replaces it by the replicated one
    for the rest of the fit."""
    length = len(ids)
    tokens = mx.array([ids])
    positions = mx.arange(length)
    valid = ((positions >= settings.skip_first) & (positions < length - 1)).astype(dtype)
    count = float(length - 1 - settings.skip_first)
    out = [np.zeros((d_model, d_model), dtype=np.float32) for _ in settings.sources]
    for start in range(0, d_model, settings.dim_batch):
        stop = min(start + settings.dim_batch, d_model)
        dims = mx.arange(start, start + settings.dim_batch)
        onehot = (mx.arange(d_model)[None, :] == dims[:, None]).astype(dtype)
        cotangents = valid[None, None, :, None] * onehot[:, None, None, :]
        try:
            result = engines[0](tokens, valid, cotangents)
            mx.eval(result)
        except (RuntimeError, ValueError) as exc:
            if "NYI" not in str(exc):
                raise
            engines[0] = engines[-1]
            result = engines[0](tokens, valid, cotangents)
            mx.eval(result)
        for matrix, block in zip(out, result, strict=True):
            matrix[start:stop] = np.array(block[: stop - start]) / np.float32(count)
        on_rows(stop)
        check_interrupt()
    return out


@dataclass
class FitState:
    """Running sums over prompts, as the reference's checkpoint keeps them."""

    sums: list[np.ndarray]
    n_done: int = 0
    next_index: int = 0
    skipped: int = 0
    tokens: int = 0

    def save(self, folder: Path, digest: str, sources: Sequence[int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_tensors(
            folder / "sums.safetensors",
            {f"sum.{layer}": s for layer, s in zip(sources, self.sums, strict=True)},
        )
        meta = {"digest": digest, **{k: v for k, v in asdict(self).items() if k != "sums"}}
        tmp = folder / ".state.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, folder / "state.json")

    @classmethod
    def resume(cls, folder: Path, digest: str, sources: Sequence[int], d: int) -> FitState | None:
        """The saved state if it belongs to the same prompts and settings, else None."""
        try:
            meta = json.loads((folder / "state.json").read_text())
            if meta.get("digest") != digest:
                return None
            tensors = read_tensors(folder / "sums.safetensors", 2**34)
            sums = [tensors[f"sum.{layer}"].astype(np.float64) for layer in sources]
        except (OSError, ValueError, KeyError):
            return None
        if any(s.shape != (d, d) for s in sums):
            return None
        keys = ("n_done", "next_index", "skipped", "tokens")
        return cls(sums, **{k: int(meta[k]) for k in keys})


def fit_jacobians(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    settings: JacobianSettings,
    d_model: int,
    dtype: mx.Dtype = mx.float32,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    checkpoint: Path | None = None,
    on_progress: Callable[[FitProgress], None] | None = None,
) -> tuple[dict[int, np.ndarray], FitState]:
    """The prompt-averaged Jacobians {source block: [D, D] float32} and the fit's counts."""
    digest = prompt_digest(token_lists, settings)
    state = None
    if checkpoint is not None:
        state = FitState.resume(checkpoint, digest, settings.sources, d_model)
    if state is None:
        state = FitState([np.zeros((d_model, d_model)) for _ in settings.sources])
    total = len(token_lists)

    def report(rows: int) -> None:
        if on_progress is not None:
            on_progress(FitProgress(state.next_index, total, rows, d_model))

    run = perturbed(model, settings.sources, settings.target, embedding_factor, windows)
    sources = len(settings.sources)
    engines = [row_batches(run, sources, dtype), replicated_rows(run, sources, dtype)]
    for index in range(state.next_index, total):
        ids = list(token_lists[index])[: settings.max_seq_len]
        if len(ids) > settings.skip_first + 1:
            rows = _prompt_rows(engines, ids, settings, d_model, dtype, report)
            for total_sum, prompt in zip(state.sums, rows, strict=True):
                total_sum += prompt
            state.n_done += 1
            state.tokens += len(ids)
        else:
            state.skipped += 1
        state.next_index = index + 1
        if checkpoint is not None:
            state.save(checkpoint, digest, settings.sources)
        report(d_model)
    if state.n_done == 0:
        from lazarus_mcp.errors import InvalidRequestError

        raise InvalidRequestError(
            f"every prompt was too short: each needs more than {settings.skip_first + 1} tokens"
        )
    means = {
        layer: (s / state.n_done).astype(np.float32)
        for layer, s in zip(settings.sources, state.sums, strict=True)
    }
    return means, state
