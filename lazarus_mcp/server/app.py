"""``lazarus-mcp``: the logit lens as Model Context Protocol tools (stdio or streamable HTTP).

The server owns no analysis: each tool maps its pydantic input onto the core's
:class:`AnalysisConfig`, calls the async analyzer on the server's one :class:`ModelCache`, and
returns the core's result as structured content, so a tool call and ``lazarus introspect analyze
-o`` give the same JSON. MLX work runs on the core's single worker thread; the event loop only
waits, so cheap calls answer while an analysis runs. stdout is the protocol: logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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
from pydantic import BaseModel, ValidationError

from lazarus_mcp.errors import InvalidRequestError, LazarusError
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache, default_cache
from lazarus_mcp.schema import AnalysisBatch, AnalysisConfig, AnalysisResult
from lazarus_mcp.schema.attribution import AttributionResult
from lazarus_mcp.schema.compare import CompareResult
from lazarus_mcp.schema.generation import GenerationResult, GenerationStep
from lazarus_mcp.server.comparison_tools import (
    ATTRIBUTE_DOC,
    COMPARE_DOC,
    AttributeInput,
    CompareInput,
)
from lazarus_mcp.server.generation_tool import GENERATE_DOC, GenerateInput, generation_image
from lazarus_mcp.server.outputs import analyze_output_schema, heatmap_images
from lazarus_mcp.server.progress import Context, Progress
from lazarus_mcp.server.timeline import render_generation
from lazarus_mcp.server.summaries import attribution_lines, compare_lines
from lazarus_mcp.server.tools import (
    ANALYZE_DOC,
    INFO_DOC,
    LOADED_DOC,
    TRACK_DOC,
    AnalyzeInput,
    LoadedModel,
    LoadedModels,
    LoadedModelsInput,
    ModelInfoInput,
    ModelStatus,
    TokenTracking,
    TrackTokensInput,
    render_analysis,
    render_batch,
    render_loaded,
    render_status,
    render_tracking,
)

logger = logging.getLogger(__name__)

SERVER_NAME = "lazarus"
INSTRUCTIONS = """\
Logit-lens introspection of language models (MLX): what a model would predict for the next \
token if it stopped after each transformer block. Start with `analyze` (the whole lens for a \
prompt); use `track_tokens` to follow how likely specific tokens (e.g. a correct and a wrong \
answer) are at each layer; `attribute` says which block and sub-layer (attention or MLP) wrote a \
token's logit; `compare` puts two runs side by side (two prompts, or a model and its quantized \
copy); `generate` lets the model write and reads the lens at every token it writes (when did \
it decide each token, or its answer); `model_info` describes a model's architecture; `loaded_models` lists \
what is in memory. Models are local directories, Hugging Face ids, or 'demo'. The first call on \
a model loads it (seconds to minutes); later calls reuse it. Probabilities are over the whole \
vocabulary; ranks are 1-based; layers are 0-based block indices."""

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True)


# Tool bodies: inputs -> core -> (result, text) ------------------------------------------------


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


async def run_lens(
    cache: ModelCache,
    model_id: str,
    prompt: str,
    config: AnalysisConfig,
    ctx: Context,
    plot: bool = False,
) -> AnalysisResult:
    progress = Progress(ctx, total=2)
    analyzer = await open_model(cache, model_id, progress)
    result = await progress.step(
        "running the logit lens", analyzer.analyze(prompt, config, plot=plot)
    )
    await progress.finish("done")
    return result


async def run_batch(
    cache: ModelCache,
    model_id: str,
    prompts: list[str],
    config: AnalysisConfig,
    ctx: Context,
    plot: bool = False,
) -> list[AnalysisResult]:
    progress = Progress(ctx, total=1 + len(prompts))
    analyzer = await open_model(cache, model_id, progress)

    async def report(done: int, total: int) -> None:
        await progress.report(1 + done, f"analyzed {done} of {total} prompts")

    results = await analyzer.analyze_batch(prompts, config, on_progress=report, plot=plot)
    await progress.finish("done")
    return results


async def analyze(
    cache: ModelCache, params: AnalyzeInput, ctx: Context
) -> tuple[AnalysisResult | AnalysisBatch, str] | tuple[BaseModel, str, list[ImageContent]]:
    config = params.config()
    if params.plot and params.plot_metric.value == "rank" and not params.track_tokens:
        raise InvalidRequestError("plot_metric 'rank' needs a tracked token in track_tokens")
    out: AnalysisResult | AnalysisBatch
    if params.prompt is not None:
        result = await run_lens(cache, params.model, params.prompt, config, ctx, params.plot)
        out, text, results = result, render_analysis(result), [result]
    else:
        results = await run_batch(cache, params.model, params.texts, config, ctx, params.plot)
        out = AnalysisBatch(results=results)
        text = render_batch(out)
    if not params.plot:
        return out, text
    limits.check_interrupt_of_call()
    images = await anyio.to_thread.run_sync(heatmap_images, results, params.plot_metric)
    return out, text, images


async def track_tokens(
    cache: ModelCache, params: TrackTokensInput, ctx: Context
) -> tuple[TokenTracking, str]:
    result = await run_lens(cache, params.model, params.prompt, params.config(), ctx)
    tracking = TokenTracking.of(result)
    return tracking, render_tracking(tracking)


async def model_info(
    cache: ModelCache, params: ModelInfoInput, ctx: Context
) -> tuple[ModelStatus, str]:
    already = cache.peek(params.model) is not None
    progress = Progress(ctx, total=1)
    analyzer = await open_model(cache, params.model, progress)
    await progress.finish("done")
    status = ModelStatus(**analyzer.info.model_dump(), already_loaded=already)
    return status, render_status(status)


async def loaded_models(
    cache: ModelCache, params: LoadedModelsInput, ctx: Context
) -> tuple[LoadedModels, str]:
    held = cache.loaded()
    loaded = LoadedModels(
        models=[LoadedModel(model=m.info, memory_bytes=m.nbytes) for m in held],
        max_models=cache.max_models,
        memory_budget_bytes=cache.memory_budget,
        memory_used_bytes=sum(m.nbytes for m in held),
    )
    return loaded, render_loaded(loaded)


async def attribute(
    cache: ModelCache, params: AttributeInput, ctx: Context
) -> tuple[AttributionResult, str]:
    progress = Progress(ctx, total=2)
    analyzer = await open_model(cache, params.model, progress)
    result = await progress.step("attributing", analyzer.attribute(params.prompt, params.config()))
    await progress.finish("done")
    return result, "\n".join(attribution_lines(result))


async def compare(
    cache: ModelCache, params: CompareInput, ctx: Context
) -> tuple[CompareResult, str]:
    progress = Progress(ctx, total=3)
    analyzer = await open_model(cache, params.model, progress)
    other = await open_model(cache, params.model_b, progress) if params.model_b else None
    result = await progress.step(
        "comparing",
        analyzer.compare(params.prompt, params.config(), prompt_b=params.prompt_b, other=other),
    )
    await progress.finish("done")
    return result, "\n".join(compare_lines(result))


async def generate(
    cache: ModelCache, params: GenerateInput, ctx: Context
) -> tuple[GenerationResult, str] | tuple[GenerationResult, str, list[ImageContent]]:
    config = params.config()
    progress = Progress(ctx, total=2 + params.max_new_tokens)
    analyzer = await open_model(cache, params.model, progress)

    async def on_step(step: GenerationStep) -> None:
        await progress.report(2 + step.step, f"token {step.step + 1}: {step.token!r}")

    await progress.report(1, "reading the prompt")
    result = await analyzer.generate(params.prompt, config, on_step=on_step, plot=params.plot)
    await progress.finish("done")
    text = render_generation(result)
    if not params.plot:
        return result, text
    limits.check_interrupt_of_call()
    image = await anyio.to_thread.run_sync(generation_image, result, params.plot_metric)
    return result, text, [image]


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


Body = Callable[[ModelCache, Any, Context], Awaitable[tuple[Any, ...]]]


@dataclass(frozen=True)
class LensTool:
    """One tool: its body, the pydantic model that validates its arguments (schema, bounds,
    extra=forbid) and the one its structured content follows."""

    body: Body
    inputs: type[BaseModel]
    output: Any  # a pydantic model, or a union of them with ``output_schema`` given
    doc: str
    # Whether a call with these arguments waits for the MLX worker (the queue cap applies).
    needs_worker: Callable[[ModelCache, Any], bool] = lambda cache, params: True
    output_schema: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.body.__name__

    def listing(self) -> Tool:
        return Tool(
            name=self.name,
            title=self.name.replace("_", " ").capitalize(),
            description=self.doc,
            input_schema=self.inputs.model_json_schema(by_alias=True),
            output_schema=self.output_schema or self.output.model_json_schema(mode="serialization"),
            annotations=READ_ONLY,
        )


TOOLS = (
    LensTool(
        analyze,
        AnalyzeInput,
        AnalysisResult | AnalysisBatch,
        ANALYZE_DOC,
        output_schema=analyze_output_schema(),
    ),
    LensTool(track_tokens, TrackTokensInput, TokenTracking, TRACK_DOC),
    LensTool(attribute, AttributeInput, AttributionResult, ATTRIBUTE_DOC),
    LensTool(compare, CompareInput, CompareResult, COMPARE_DOC),
    LensTool(generate, GenerateInput, GenerationResult, GENERATE_DOC),
    LensTool(
        model_info,
        ModelInfoInput,
        ModelStatus,
        INFO_DOC,
        lambda cache, params: cache.peek(params.model) is None,
    ),
    LensTool(loaded_models, LoadedModelsInput, LoadedModels, LOADED_DOC, lambda c, p: False),
)


def _outer_bound(timeout: float | None) -> float | None:
    return None if timeout is None else 2 * timeout + 1.0


def _busy(cache: ModelCache, tool: LensTool, params: BaseModel) -> str | None:
    waiting = worker.pending()
    cap = limits.current().max_queued_calls
    if waiting >= cap and tool.needs_worker(cache, params):
        return (
            f"the server is busy: {waiting} calls are waiting for the model worker (the limit "
            "is --max-queued-calls); try again shortly"
        )
    return None


async def call_tool(
    cache: ModelCache, tool: LensTool, arguments: dict[str, Any], ctx: Context
) -> CallToolResult:
    """Validate, run under the call's deadline, and answer: a result, or an error in one line."""
    try:
        params = tool.inputs.model_validate(arguments)
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
            result, text, *extra = await tool.body(cache, params, ctx)
            job.check()
            data = result.model_dump(mode="json")
            job.check()
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
    blocks: list[Any] = [TextContent(type="text", text=text), *(extra[0] if extra else [])]
    return CallToolResult(content=blocks, structured_content=data)


def create_server(cache: ModelCache | None = None, preload: Sequence[str] = ()) -> Server[Any]:
    """A server over ``cache`` (default: the process-wide one the Python API uses).

    The SDK's low-level ``Server``: our handlers list the tools from their pydantic models and
    validate each call's arguments with the model itself, so arguments are flat, unknown ones
    are refused, and every failure is one line.
    """
    cache = cache if cache is not None else default_cache()
    tools = {tool.name: tool for tool in TOOLS}
    listing = [tool.listing() for tool in TOOLS]

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=listing)

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
        get_tool_input_schema=lambda name: (
            tools[name].listing().input_schema if name in tools else None
        ),
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
