"""The one place the core reads the running job's deadline and cancellation.

``runtime.limits`` is the leaf that owns the job's interrupt; every loop of the core (between
blocks of a forward, between chunks of the cell statistics) checks it through here, so when the
leaf moves only this import does.
"""

from __future__ import annotations

from lazarus_mcp.runtime.limits import check_interrupt, interrupt

__all__ = ["check_interrupt", "interrupt"]
