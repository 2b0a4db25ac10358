"""One call of a tool, the same for every interface: the gate's static checks, then the core
function under the call's one deadline, then its last check before the result is handed on.

The interfaces differ only in their :class:`~lazarus_mcp.tools.spec.Session` (how models open and
progress shows): the MCP server reports progress notifications, the CLI a terminal line, the
Python API nothing (:class:`PlainSession`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from lazarus_mcp.runtime import gate, limits
from lazarus_mcp.runtime.cache import ModelCache, default_cache
from lazarus_mcp.tools.spec import ToolSpec

if TYPE_CHECKING:
    from lazarus_mcp.modeling.options import LoadOptions
    from lazarus_mcp.runtime.analyzer import ModelAnalyzer

T = TypeVar("T")


def precheck(params: Any) -> None:
    """The gate's checks that need no model, before any model is opened or loaded (the
    analyzer's job checks them again, with the model, so no path skips them)."""
    request = getattr(params, "request", None)
    if callable(request):
        gate.check_request(request())
    model = getattr(params, "model", None)
    if isinstance(model, str):
        limits.check_model_string(model)


async def invoke(spec: ToolSpec, session: Any, params: Any) -> Any:
    """Run one validated call of ``spec`` inside the call's deadline (the caller opens it with
    ``limits.call_deadline``); the deadline is checked once more after the core returns."""
    precheck(params)
    result = await spec.run(session, params)
    limits.check_interrupt_of_call()
    return result


class PlainSession:
    """A session without progress: the Python API's, and a base for the others."""

    def __init__(self, cache: ModelCache | None = None, options: LoadOptions | None = None):
        self._cache = cache or default_cache()
        self._options = options

    @property
    def cache(self) -> ModelCache:
        return self._cache

    async def open(self, model_id: str) -> ModelAnalyzer:
        from lazarus_mcp.runtime.analyzer import ModelAnalyzer

        return await ModelAnalyzer.load(model_id, self._options, cache=self._cache)

    async def step(self, message: str, job: Awaitable[T]) -> T:
        return await job

    async def report(self, done: float, message: str) -> None:
        return None


async def call_tool(
    name: str, arguments: dict[str, Any], *, cache: ModelCache | None = None
) -> Any:
    """The Python API's way to call any tool by name with the MCP tool's arguments; returns the
    tool's result model (the same JSON as the MCP structured content and ``lazarus ... --json``).
    Raises pydantic's ``ValidationError`` on bad arguments, :class:`LazarusError` on refusals."""
    from lazarus_mcp.tools import tool

    spec = tool(name)
    params = spec.validate(arguments)
    with limits.call_deadline():
        return await invoke(spec, PlainSession(cache), params)
