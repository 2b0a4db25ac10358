"""``lazarus-mcp``: the logit lens as Model Context Protocol tools (stdio or streamable HTTP).

The server owns no analysis: each tool maps its pydantic input onto the core's
:class:`AnalysisConfig`, calls the async analyzer on the server's one :class:`ModelCache`, and
returns the core's result as structured content, so a tool call and ``lazarus introspect analyze
-o`` give the same JSON. MLX work runs on the core's single worker thread; the event loop only
waits, so cheap calls answer while an analysis runs. stdout is the protocol: logs go to stderr.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from mcp.server import Server, ServerRequestContext
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ImageContent,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)
from pydantic import ValidationError

from lazarus_mcp.errors import LazarusError
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache, default_cache
from lazarus_mcp.server.progress import Context, Progress
from lazarus_mcp.tools import TOOLS
from lazarus_mcp.tools.calls import invoke
from lazarus_mcp.tools.spec import ToolSpec, input_schema, output_schema

logger = logging.getLogger(__name__)
T = TypeVar("T")

SERVER_NAME = "lazarus"
INSTRUCTIONS = """\
Logit-lens introspection of language models (MLX): what a model would predict for the next \
token if it stopped after each transformer block. Start with `analyze` (the whole lens for a \
prompt); use `track_tokens` to follow how likely specific tokens (e.g. a correct and a wrong \
answer) are at each layer; `attribute` says which block and sub-layer (attention or MLP) wrote a \
token's logit; `compare` puts two runs side by side (two prompts, or a model and its quantized \
copy); `model_info` describes a model's architecture; `loaded_models` lists \
what is in memory. Models are local directories, Hugging Face ids, or 'demo'. The first call on \
a model loads it (seconds to minutes); later calls reuse it. Probabilities are over the whole \
vocabulary; ranks are 1-based; layers are 0-based block indices."""

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True)


# The MCP session of a call: models from the server's cache, progress as notifications ---------


class McpSession:
    def __init__(self, cache: ModelCache, progress: Progress) -> None:
        self._cache = cache
        self._progress = progress

    @property
    def cache(self) -> ModelCache:
        return self._cache

    async def open(self, model_id: str) -> ModelAnalyzer:
        return await open_model(self._cache, model_id, self._progress)

    async def step(self, message: str, job: Awaitable[T]) -> T:
        return await self._progress.step(message, job)

    async def report(self, done: float, message: str) -> None:
        await self._progress.report(done, message)


async def open_model(cache: ModelCache, model_id: str, progress: Progress) -> ModelAnalyzer:
    """The model's analyzer from the cache, loading it (once, however many calls ask) if needed."""
    if cache.peek(model_id) is not None:
        return await progress.step(
            f"model {model_id} is loaded", ModelAnalyzer.load(model_id, cache=cache)
        )
    began = time.monotonic()
    analyzer = await progress.step(
        f"loading model {model_id}", ModelAnalyzer.load(model_id, cache=cache)
    )
    logger.info("model %s ready after %.1f s", model_id, time.monotonic() - began)
    return analyzer


# Registration and errors ----------------------------------------------------------------------


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def validation_message(exc: ValidationError) -> str:
    """One actionable line for the first problem (pydantic's own text spans several lines)."""
    errors = exc.errors()
    err = errors[0]
    # The names are the caller's: escaped (one line) and cut short.
    where = json.dumps(".".join(str(part) for part in err["loc"]))[1:-1][:100]
    if err["type"] == "missing":
        line = f"missing required argument '{where}'"
    elif err["type"] == "extra_forbidden":
        line = f"unknown argument '{where}'; the tool's input schema lists the accepted ones"
    else:
        text = str(err["msg"]).removeprefix("Value error, ")
        line = f"invalid argument '{where}': {text}" if where else f"invalid arguments: {text}"
    more = len(errors) - 1
    return line + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def listing(spec: ToolSpec) -> Tool:
    """What ``tools/list`` says of a tool: lean (no titles, top-level output fields only)."""
    return Tool(
        name=spec.name,
        title=spec.name.replace("_", " ").capitalize(),
        description=spec.doc,
        input_schema=input_schema(spec),
        output_schema=output_schema(spec),
        annotations=READ_ONLY,
    )


def _outer_bound(timeout: float | None) -> float | None:
    return None if timeout is None else 2 * timeout + 1.0


def _busy(cache: ModelCache, tool: ToolSpec, params: Any) -> str | None:
    waiting = worker.pending()
    cap = limits.current().max_queued_calls
    if waiting >= cap and tool.needs_worker(cache, params):
        return (
            f"the server is busy: {waiting} calls are waiting for the model worker (the limit "
            "is --max-queued-calls); try again shortly"
        )
    return None


async def call_tool(
    cache: ModelCache, tool: ToolSpec, arguments: dict[str, Any], ctx: Context
) -> CallToolResult:
    """Validate, run under the call's deadline, and answer: a result, or an error in one line."""
    try:
        params = tool.validate(arguments)
    except ValidationError as exc:
        return error_result(validation_message(exc))
    busy = _busy(cache, tool, params)
    if busy is not None:
        return error_result(busy)
    timeout = limits.current().call_timeout
    try:
        # One deadline for the call: the worker checks it between blocks and chunks, and it is
        # checked again before serializing. This outer bound also covers the waits (the queue,
        # a load); twice the limit, since the call's own clock starts when its job does.
        with limits.call_deadline(timeout) as job, anyio.fail_after(_outer_bound(timeout)):
            session = McpSession(cache, Progress(ctx, total=tool.steps))
            result = await invoke(tool, session, params)
            text = tool.render(result)
            images = await _images(tool, params, result)
            job.check()
            data = result.model_dump(mode="json")
            job.check()
            if tool.steps:
                await session.report(tool.steps, "done")
    except TimeoutError:
        return error_result(
            f"the call ran past its time limit of {timeout:g} s (--call-timeout) and was stopped"
        )
    except LazarusError as exc:
        return error_result(str(exc))
    except ValidationError as exc:
        return error_result(validation_message(exc))
    except Exception:
        logger.exception("tool %s failed", tool.name)
        return error_result(
            f"{tool.name} failed with an internal error; the server's log has details"
        )
    blocks: list[Any] = [TextContent(type="text", text=text), *images]
    return CallToolResult(content=blocks, structured_content=data)


async def _images(tool: ToolSpec, params: Any, result: Any) -> list[ImageContent]:
    if tool.images is None:
        return []
    limits.check_interrupt_of_call()
    pngs = await anyio.to_thread.run_sync(tool.images, params, result)
    return [
        ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png")
        for png in pngs
    ]


def create_server(cache: ModelCache | None = None, preload: Sequence[str] = ()) -> Server[Any]:
    """A server over ``cache`` (default: the process-wide one the Python API uses).

    The SDK's low-level ``Server``: our handlers list the tools from their pydantic models and
    validate each call's arguments with the model itself, so arguments are flat, unknown ones
    are refused, and every failure is one line.
    """
    cache = cache if cache is not None else default_cache()
    tools = {tool.name: tool for tool in TOOLS}
    listed = [listing(tool) for tool in TOOLS]

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=listed)

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            return error_result(f"unknown tool {params.name[:100]!r}; tools/list names the tools")
        return await call_tool(cache, tool, params.arguments or {}, ctx.session)

    return Server(
        SERVER_NAME,
        version=server_version(),
        instructions=INSTRUCTIONS,
        lifespan=_preloading(cache, list(preload)),
        get_tool_input_schema=lambda name: input_schema(tools[name]) if name in tools else None,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def _preloading(cache: ModelCache, models: list[str]) -> Callable[[Server[Any]], Any]:
    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        # In the background, so the client's handshake is answered at once; a call for a model
        # that is still loading joins that load.
        async with anyio.create_task_group() as tg:
            for model_id in models:
                tg.start_soon(_preload, cache, model_id)
            yield {}
            tg.cancel_scope.cancel()

    return lifespan


async def _preload(cache: ModelCache, model_id: str) -> None:
    began = time.monotonic()
    try:
        await cache.get(model_id)
    except LazarusError as exc:
        logger.error("--preload %s failed: %s", model_id, exc)
    except Exception:
        logger.exception("--preload %s failed", model_id)
    else:
        logger.info("preloaded %s in %.1f s", model_id, time.monotonic() - began)


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lazarus-mcp")
    except PackageNotFoundError:
        return "0"
