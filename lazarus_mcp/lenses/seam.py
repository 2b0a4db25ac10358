"""Learned lenses on the engine's one ``Lens`` seam: ``--lens logit|LENS_DIR`` everywhere.

``lens.readout.make_lens`` knows lenses by name ("logit"); any other value of an analysis's
``lens`` is a lens directory, opened here (``install`` registers :func:`open_lens_dir` as the
seam's opener). A directory is checked (``lens_dir``: hostile files refused in one line) and
matched to the loaded model (``identity``) on every call; its arrays are small (D x D per
layer) and a call reads them once.

Where lenses may come from is the process's setting: an agent's MCP server allows only paths
under ``lazarus-mcp --lens-dir DIR`` (none without it); the CLI and the Python API accept any
directory the user names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import readout as seam
from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lenses.readout import LensReader, LoadedLens, open_lens


@dataclass
class _Policy:
    allowed: Path | None = None
    required: bool = False  # an MCP server: only paths under ``allowed``


_POLICY = _Policy()


def configure(allowed: Path | None, required: bool) -> None:
    """Where lens directories may come from (``lazarus-mcp --lens-dir``)."""
    _POLICY.allowed = allowed.resolve() if allowed is not None else None
    _POLICY.required = required


class LearnedLens(seam.TranslatorLens):
    """A tuned or Jacobian lens behind the engine's seam."""

    def __init__(self, head: LensHead, lens: LoadedLens) -> None:
        super().__init__(head)
        self.lens = lens
        self.name = lens.kind

    def translate(self, hidden: mx.array, layer: int | None) -> mx.array:
        return self.lens.transform(hidden, layer)

    def linear_part(self, layer: int | None) -> tuple[mx.array | None, mx.array | None]:
        return self.lens.linear_part(layer)

    def describe(self) -> dict[str, Any]:
        return LensReader(self.head, self.lens).describe()


def open_lens_dir(loaded: Any, path: str) -> seam.Lens:
    """The seam's opener for a value that is not a lens name."""
    if _POLICY.required and _POLICY.allowed is None:
        raise InvalidRequestError(
            "this server reads no lens directories (start it with --lens-dir DIR); "
            "lens 'logit' is available"
        )
    return LearnedLens(loaded.head, open_lens(path, loaded, _POLICY.allowed))


def install() -> None:
    seam.set_lens_opener(open_lens_dir)
