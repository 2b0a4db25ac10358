"""The one check an analysis makes of its own: on the computed arrays, before they become a result.

Every limit on a request (prompt characters and tokens, tracked tokens, layers, positions, top_k,
memory, result size) is the request gate's (``runtime/gate.py``), checked once before any work
for every tool and interface; the analyses hold no second copy of a limit or its message. This
module used to: ``guards.py`` re-checked the prompt, the config and the forward's memory with an
estimate of its own, which had drifted from the gate's (no batch, no kept states, no chunks).
"""

from __future__ import annotations

import numpy as np

from lazarus_mcp.errors import InvalidRequestError


def check_finite(*arrays: np.ndarray) -> None:
    """A non-finite number would make an invalid result; it is an error with a reason."""
    for array in arrays:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise InvalidRequestError(
                "the forward pass produced non-finite numbers (inf or NaN), so there is no "
                "lens to report; an extreme embedding_scale does this"
            )
