"""The one seam where a lens turns a residual stream into logits: :class:`Lens`.

Every analysis (last position, grid, batch, compare, attribute, steps) reads a block through
``lens.readout(hidden, layer)``, so another lens (a translator per layer: the tuned lens
``h + W h + b``, a Jacobian lens ``J h`` before the final norm) plugs in here, by name, and
works everywhere. Block N-1's row is the model's own output under every lens (``cells``); a
lens is checked against it there (``fidelity``). The default, ``"logit"``, is the model's own
head (``head.LensHead``: its final norm, unembedding and soft-cap).

A lens is made per loaded model by a factory registered under its name; the factory receives
the loaded model (anything with ``.model`` and ``.head``, and whatever the lens reads from it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx

from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens.head import LensHead


class Lens(ABC):
    """Residual vectors of one layer [..., D] -> float32 logits [..., V]."""

    name: str = "lens"

    @abstractmethod
    def readout(self, hidden: mx.array, layer: int | None) -> mx.array:
        """The lens of ``layer`` (a block index as in the result; None: the embedding output)."""

    def describe(self) -> dict[str, Any]:
        """What a result reports as the lens it read: ``{kind, path, fit}``."""
        return {"kind": self.name, "path": None, "fit": None}

    def readout_rows(self, hidden: mx.array, layers: Sequence[int | None]) -> mx.array:
        """[L, C, D] -> [L, C, V]: row n is layer ``layers[n]``. One readout per layer; a lens
        whose map does not depend on the layer overrides this with one projection."""
        return mx.stack([self.readout(hidden[n], layer) for n, layer in enumerate(layers)])


class TranslatorLens(Lens):
    """A map per layer inside the residual space (``translate``), then the model's own head:
    the tuned lens (``h + W h + b``), a Jacobian lens (``J h``), the logit lens (identity).

    Every row of a chunk goes through the head as one projection, so two lenses whose
    translations agree give bitwise the same logits (the GEMM sees the same shapes)."""

    def __init__(self, head: LensHead) -> None:
        self.head = head

    @abstractmethod
    def translate(self, hidden: mx.array, layer: int | None) -> mx.array:
        """The residual vectors [..., D] of ``layer``, moved to where the head reads them."""

    def linear_part(self, layer: int | None) -> tuple[mx.array | None, mx.array | None]:
        """(A, b) with ``translate(h) = h A^T + b`` at ``layer``; None for the identity and for
        no bias. Direct logit attribution maps each component through it (``decompose``), so a
        lens that does not state it cannot be decomposed (it is not assumed the identity)."""
        raise UnsupportedModelError(
            f"the {self.name} lens does not state its linear map: attribute cannot decompose it"
        )

    def readout(self, hidden: mx.array, layer: int | None) -> mx.array:
        return self.head(self.translate(hidden, layer))

    def readout_rows(self, hidden: mx.array, layers: Sequence[int | None]) -> mx.array:
        moved = mx.stack([self.translate(hidden[n], layer) for n, layer in enumerate(layers)])
        flat = moved.reshape(-1, moved.shape[-1])
        return self.head(flat).reshape(*moved.shape[:2], -1)


class LogitLens(TranslatorLens):
    """The logit lens: every layer through the model's own head, untranslated."""

    name = "logit"

    def translate(self, hidden: mx.array, layer: int | None) -> mx.array:
        return hidden

    def linear_part(self, layer: int | None) -> tuple[mx.array | None, mx.array | None]:
        return None, None

    def readout_rows(self, hidden: mx.array, layers: Sequence[int | None]) -> mx.array:
        flat = hidden.reshape(-1, hidden.shape[-1])
        return self.head(flat).reshape(*hidden.shape[:2], -1)


LensFactory = Callable[[Any], Lens]

LENSES: dict[str, LensFactory] = {"logit": lambda loaded: LogitLens(loaded.head)}


# Opens a lens that is not a registered name (a lens directory: ``lenses/seam.py``).
_opener: list[Callable[[Any, str], Lens]] = []


def set_lens_opener(opener: Callable[[Any, str], Lens]) -> None:
    _opener[:] = [opener]


def register_lens(name: str, factory: LensFactory) -> None:
    """Make ``factory(loaded) -> Lens`` available as ``name`` (an analysis's lens choice)."""
    LENSES[name] = factory


def lens_name(config: Any) -> str:
    """The lens a config asks for: its ``lens`` field where it has one, else the logit lens."""
    name = getattr(config, "lens", None)
    return name if isinstance(name, str) and name else "logit"


def make_lens(loaded: Any, name: str = "logit") -> Lens:
    """The lens ``name`` for a loaded model."""
    factory = LENSES.get(name)
    if factory is None and _opener:
        return _opener[0](loaded, name)
    if factory is None:
        raise InvalidRequestError(
            f"unknown lens {name!r}: choose one of {', '.join(sorted(LENSES))}"
        )
    return factory(loaded)
