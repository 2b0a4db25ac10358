"""Analyses from a loaded model: request checks, the lens of prompts, attribution, comparison.

Orchestration above ``modeling``; the lens math they run is ``lazarus_mcp.lens``.
"""

from lazarus_mcp.lenses.seam import install as _install_lens_dirs

# ``lens`` values that are not lens names are lens directories (tuned / Jacobian lenses).
_install_lens_dirs()
