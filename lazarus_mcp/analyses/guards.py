"""The limits of one analysis, checked where the data is: the request before any work, the
encoded prompt before the forward pass, the arrays before they become a result.

The numbers live in ``runtime/limits.py`` (one set for the server, the CLI and the API). What the
forward pass costs beyond the weights, estimated before it runs (float32 on the CPU):
activations ~ T * (4 D + 3 I) * 4 bytes per block held at once, the attention scores
H * T^2 * 4 bytes (times three: scores, mask, softmax), and the lens projection
(L + 1) * V * 4 bytes (times four: logits, log-probabilities, probabilities, rank masks). A
30,000-token prompt on a 4-head demo model is 43 GB of attention scores: refused, not attempted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.runtime import limits

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.schema import AnalysisConfig


def _arg(model: Any, name: str) -> int | None:
    value = getattr(getattr(model, "args", None), name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_request(prompt: str, config: AnalysisConfig) -> None:
    """Before any work: the prompt's characters, the tracked tokens, the listed layers, floats."""
    limits.check_prompt_chars(prompt)
    check_config(config)


def check_config(config: AnalysisConfig) -> None:
    """Before any work: the tracked tokens, the listed layers, float arguments."""
    limits.check_tracked(config.track_tokens)
    limits.check_layers_listed(config.custom_layers)
    limits.check_float_arg("embedding_scale", config.embedding_scale)


def forward_bytes(loaded: LoadedModel, tokens: int, layers: int) -> int:
    info = loaded.info
    heads = _arg(loaded.model, "num_attention_heads") or 1
    inter = _arg(loaded.model, "intermediate_size") or 4 * info.hidden_size
    activations = tokens * (4 * info.hidden_size + 3 * inter) * 4
    attention = 3 * heads * tokens * tokens * 4
    lens = 4 * (layers + 1) * info.vocab_size * 4
    return activations + attention + lens


def check_encoded(loaded: LoadedModel, tokens: int, layers: int) -> None:
    """Before the forward pass: the prompt's tokens and the pass's estimated peak memory."""
    context = _arg(loaded.model, "max_position_embeddings")
    limits.check_prompt_tokens(tokens, context)
    limits.check_memory("this forward pass", forward_bytes(loaded, tokens, layers))


def check_finite(*arrays: np.ndarray) -> None:
    """A non-finite number would make an invalid result; it is an error with a reason."""
    for array in arrays:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise InvalidRequestError(
                "the forward pass produced non-finite numbers (inf or NaN), so there is no "
                "lens to report; an extreme embedding_scale does this"
            )
