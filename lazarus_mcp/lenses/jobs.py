"""The three ways a LENS_DIR is made, each from a loaded model to a written, checked lens:
``fit_jacobian_lens``, ``train_tuned_lens`` (and ``importers`` for the published formats).

Each checks its memory need against the budget before it starts, runs under the call's
deadline (``runtime/limits.py``: stopped between row batches or steps, with the checkpoint
kept so the same command resumes), records how the lens was made, and measures it on held-out
text. Runs on the MLX worker thread only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.lenses import jacobian_fit, tuned_train
from lazarus_mcp.lenses.evaluate import held_out
from lazarus_mcp.lenses.lens_dir import LensConfig, LensFile, load_lens, save_lens
from lazarus_mcp.lenses.readout import LoadedLens, identity_of
from lazarus_mcp.modeling.loading import LoadedModel
from lazarus_mcp.runtime.limits import check_memory


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lazarus-mcp")
    except Exception:
        return "unknown"


def fit_jacobian_lens(
    loaded: LoadedModel,
    token_lists: Sequence[Sequence[int]],
    out: Path,
    settings: jacobian_fit.JacobianSettings,
    held: Sequence[Sequence[int]] = (),
    corpus: str = "",
    on_progress: Callable[[jacobian_fit.FitProgress], None] | None = None,
) -> LensFile:
    info = loaded.info
    length = min(settings.max_seq_len, max((len(t) for t in token_lists), default=1))
    need = jacobian_fit.activation_bytes(
        length, info.hidden_size, info.num_layers, settings.dim_batch
    )
    check_memory("the Jacobian fit", need, held=loaded.nbytes)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    matrices, state = jacobian_fit.fit_jacobians(
        loaded.model,
        token_lists,
        settings,
        info.hidden_size,
        getattr(mx, info.compute_dtype),
        loaded.embedding_factor(None),
        loaded.sliding_windows,
        checkpoint=out / jacobian_fit.CHECKPOINT,
        on_progress=on_progress,
    )
    provenance = {
        "made_by": f"lazarus-mcp {_version()} fit-jacobian",
        "estimator": "jacobian_lens (TransformerLens JacobianLens.fit / anthropics/jacobian-lens)",
        "corpus": corpus,
        "n_prompts": state.n_done,
        "skipped_prompts": state.skipped,
        "tokens": state.tokens,
        "skip_first_positions": settings.skip_first,
        "max_seq_len": settings.max_seq_len,
        "target_layer": settings.target,
        "compute_dtype": info.compute_dtype,
        "quantization": info.quantization.model_dump() if info.quantization else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    config = LensConfig(
        kind="jacobian",
        num_layers=info.num_layers,
        d_model=info.hidden_size,
        layers=list(settings.sources),
        model=identity_of(loaded),
        provenance=provenance,
    )
    lens = LensFile(config, out, dict(matrices.items()), {})
    return _finish(loaded, lens, out, held, jacobian_fit.CHECKPOINT)


def _finish(
    loaded: LoadedModel, lens: LensFile, out: Path, held: Sequence[Sequence[int]], scratch: str
) -> LensFile:
    if held:
        lens.config.held_out = held_out(
            loaded.model,
            loaded.head,
            LoadedLens.from_file(lens),
            held,
            loaded.info.num_layers,
            loaded.embedding_factor(None),
            loaded.sliding_windows,
        )
    save_lens(out, lens)
    shutil.rmtree(out / scratch, ignore_errors=True)
    return load_lens(out)  # what was written reads back, through the checks every reader uses


def _digest(sequences: Sequence[Sequence[int]], recipe: tuned_train.TunedRecipe) -> str:
    digest = hashlib.sha256(json.dumps(asdict(recipe)).encode())
    for ids in sequences:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def train_tuned_lens(
    loaded: LoadedModel,
    sequences: Sequence[Sequence[int]],
    out: Path,
    recipe: tuned_train.TunedRecipe,
    held: Sequence[Sequence[int]] = (),
    corpus: str = "",
    time_budget: float | None = None,
    on_progress: Callable[[tuned_train.TrainProgress], None] | None = None,
) -> LensFile:
    info = loaded.info
    if not sequences:
        raise ValueError("no training sequences")
    tokens = recipe.batch_sequences * len(sequences[0])
    # Per layer at a time: the [M, V] logits, their gradient and the softmax, float32.
    need = 4 * tokens * info.vocab_size * 4 + 3 * info.num_layers * info.hidden_size**2 * 4
    check_memory("tuned-lens training", need, held=loaded.nbytes)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(recipe.seed)
    picks = [
        order.choice(len(sequences), size=recipe.batch_sequences, replace=True)
        for _ in range(recipe.steps)
    ]

    def batch(step: int) -> list[list[int]]:
        return [list(sequences[i]) for i in picks[step]]

    started = time.monotonic()
    state = tuned_train.train_tuned(
        loaded.model,
        loaded.head,
        batch,
        info.num_layers,
        info.hidden_size,
        recipe,
        _digest(sequences, recipe),
        loaded.embedding_factor(None),
        loaded.sliding_windows,
        checkpoint=out / tuned_train.CHECKPOINT,
        time_budget=time_budget,
        on_progress=on_progress,
    )
    weight, bias = np.array(state.weight), np.array(state.bias)
    provenance: dict[str, Any] = {
        "made_by": f"lazarus-mcp {_version()} train-tuned",
        "recipe": asdict(recipe),
        "steps_done": state.step,
        "tokens_per_step": tokens,
        "corpus": corpus,
        "loss_first_last": [state.losses[0], state.losses[-1]] if state.losses else [],
        "seconds": round(time.monotonic() - started, 1),
    }
    config = LensConfig(
        kind="tuned",
        num_layers=info.num_layers,
        d_model=info.hidden_size,
        layers=list(range(info.num_layers - 1)),
        model=identity_of(loaded),
        embedding=True,
        provenance=provenance,
    )
    weights: dict[int | None, np.ndarray] = {None: weight[0]}
    biases: dict[int | None, np.ndarray] = {None: bias[0]}
    for block in range(info.num_layers - 1):
        weights[block], biases[block] = weight[block + 1], bias[block + 1]
    lens = LensFile(config, out, weights, biases)
    return _finish(loaded, lens, out, held, tuned_train.CHECKPOINT)
