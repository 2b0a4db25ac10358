"""The logit lens: one forward pass (``taps``), one batched projection of the captured residual
streams through the lens head, and every statistic from that projection.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens.head import LensHead, backbone


@dataclass
class LensArrays:
    """Everything the result needs, as numpy arrays, computed by one ``mx.eval``."""

    layers: list[int | None]  # None: the embedding output
    top_ids: np.ndarray  # [L, k]
    top_probs: np.ndarray  # [L, k]
    entropy: np.ndarray  # [L]
    kl: np.ndarray  # [L]
    final_top_ids: np.ndarray  # [k]
    final_top_probs: np.ndarray  # [k]
    tracked_probs: np.ndarray  # [L, T]
    tracked_ranks: np.ndarray  # [L, T]
    final_tracked_probs: np.ndarray  # [T]
    final_tracked_ranks: np.ndarray  # [T]


def compute_lens(
    model: nn.Module,
    head: LensHead,
    token_ids: list[int],
    layers: list[int],
    top_k: int,
    tracked_ids: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> LensArrays:
    """The lens of each selected block at the last position (the grid's last column)."""
    from lazarus_mcp.lens.grid import lens_grid
    from lazarus_mcp.lens.grid_taps import forward_grid

    position = [[len(token_ids) - 1]]
    capture = forward_grid(model, [token_ids], position, layers, False, embedding_factor, windows)
    last = len(backbone(model).layers) - 1
    hidden = {r: h[0] for r, h in capture.hidden.items()}
    rows: list[int | None] = list(layers)
    return lens_grid(head, rows, hidden, capture.final_logits[0], last, top_k, tracked_ids)[0]
