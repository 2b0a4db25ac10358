"""The tools, each declared once (``spec.ToolSpec``): the MCP server, the ``lazarus`` commands
and ``introspection.call_tool`` are all built from :data:`TOOLS`. To add a tool, write its module
here and add it to this tuple (see /work/notes/TOOLSPEC.md).
"""

from __future__ import annotations

from lazarus_mcp.tools.depth import ATTRIBUTE, COMPARE
from lazarus_mcp.tools.generate import GENERATE
from lazarus_mcp.tools.lens import ANALYZE, TRACK_TOKENS
from lazarus_mcp.tools.models import LOADED_MODELS, MODEL_INFO
from lazarus_mcp.tools.spec import ToolSpec

TOOLS: tuple[ToolSpec, ...] = (
    ANALYZE,
    TRACK_TOKENS,
    ATTRIBUTE,
    COMPARE,
    GENERATE,
    MODEL_INFO,
    LOADED_MODELS,
)


def tool(name: str) -> ToolSpec:
    """The tool called ``name``; :class:`KeyError` if there is none."""
    for spec in TOOLS:
        if spec.name == name:
            return spec
    raise KeyError(name)


__all__ = ["TOOLS", "ToolSpec", "tool"]
