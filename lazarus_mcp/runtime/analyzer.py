"""The async analyzer: the one core behind the Python API, the CLI and the MCP server.

Every MCP tool, CLI command and API method that computes reaches the worker through
:meth:`ModelAnalyzer.compute`, and that is where the request gate (``runtime/gate.py``) runs: the
static checks before the job is queued, the model-dependent ones as the job's first step. The
call's one deadline (``limits.call_deadline``) covers all the jobs of the call.

Importing it imports no MLX: process setup (the BLAS preload) happens at the first load, on the
worker thread, before MLX is imported (see ``runtime/process.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime import gate, limits, worker
from lazarus_mcp.runtime.cache import ModelCache, default_cache
from lazarus_mcp.runtime.limits import Interrupt
from lazarus_mcp.schema import (
    AnalysisConfig,
    AnalysisResult,
    AttributionConfig,
    AttributionResult,
    CompareResult,
    ModelInfo,
)

if TYPE_CHECKING:
    from lazarus_mcp.generation.run import GenerationRun
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.runtime.generation import GenerationStream
    from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult, GenerationStep

ProgressCallback = Callable[[int, int], Awaitable[None]]
StepCallback = Callable[["GenerationStep"], Awaitable[None]]
T = TypeVar("T")


def _analyze(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    from lazarus_mcp.analyses.analysis import analyze_loaded

    return analyze_loaded(loaded, prompt, config)


def _attribute(loaded: LoadedModel, prompt: str, config: AttributionConfig) -> AttributionResult:
    from lazarus_mcp.analyses.attribution import attribute_loaded

    return attribute_loaded(loaded, prompt, config)


def _compare(
    a: LoadedModel,
    b: LoadedModel,
    prompt_a: str,
    prompt_b: str,
    config: AnalysisConfig,
    lens_b: str | None = None,
) -> CompareResult:
    from lazarus_mcp.analyses.compare import compare_loaded

    return compare_loaded(a, b, prompt_a, prompt_b, config, lens_b)


def _deadline() -> Interrupt:
    """The call's deadline: the one of the call in progress (``limits.call_deadline``: a tool
    call, a CLI command), else a new one from the process's ``call_timeout``."""
    return limits.current_call() or Interrupt.after(limits.current().call_timeout)


def _admitted(
    models: tuple[LoadedModel, ...], request: gate.Request, fn: Callable[..., T], args: Any
) -> T:
    """On the worker: the gate's model checks, then the work."""
    gate.admit(models, request)
    return fn(*args)


class _Opening:
    """``async with ModelAnalyzer.from_pretrained(...)`` (or ``await`` it)."""

    def __init__(self, model_id: str, options: LoadOptions, cache: ModelCache) -> None:
        self._args = (model_id, options, cache)

    def __await__(self) -> Generator[Any, None, ModelAnalyzer]:
        return ModelAnalyzer.load(*self._args).__await__()

    async def __aenter__(self) -> ModelAnalyzer:
        return await ModelAnalyzer.load(*self._args)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The model stays in the shared cache for the next analyzer of the process.
        return None


class ModelAnalyzer:
    """Logit-lens analysis of one loaded model.

    >>> async with ModelAnalyzer.from_pretrained("demo") as analyzer:
    ...     result = await analyzer.analyze("The capital of France is")
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        cache: ModelCache | None = None,
        requantize: int | None = None,
    ) -> _Opening:
        options = LoadOptions(dtype=dtype, device=device, requantize=requantize)
        return _Opening(model_id, options, cache or default_cache())

    @classmethod
    async def load(
        cls, model_id: str, options: LoadOptions | None = None, cache: ModelCache | None = None
    ) -> ModelAnalyzer:
        return cls(await (cache or default_cache()).get(model_id, options))

    @property
    def info(self) -> ModelInfo:
        return self._loaded.info

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    async def compute(
        self,
        request: gate.Request,
        fn: Callable[..., T],
        *args: Any,
        others: tuple[LoadedModel, ...] = (),
        interrupt: Interrupt | None = None,
    ) -> T:
        """The gate, then ``fn(*args)`` on the worker under the call's deadline.

        The one way work reaches the worker: every method below calls it, and a new tool's core
        function may call it with its own synchronous analysis (``fn(*args)`` runs on the MLX
        worker after ``gate.admit(models, request)``), so adding a tool needs no new method."""
        gate.check_request(request)
        models = (self._loaded, *others)
        job = interrupt if interrupt is not None else _deadline()
        return await worker.run(_admitted, models, request, fn, args, interrupt=job)

    async def analyze_batch(
        self,
        prompts: list[str],
        config: AnalysisConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        plot: bool = False,
    ) -> list[AnalysisResult]:
        """One result per prompt, in order. Prompts of similar length run through the model
        together (padded), a group per forward pass; ``on_progress(done, total)`` is awaited
        after each group with the number of prompts done."""
        from lazarus_mcp.analyses import batch

        config = config or AnalysisConfig()
        prompts = list(prompts)
        job = _deadline()  # one deadline for every group of the batch
        request = gate.Request("lens", prompts, config, plot=plot)
        plan, encoded = await self.compute(
            request, batch.prepare, self._loaded, prompts, config, interrupt=job
        )
        results: list[AnalysisResult | None] = [None] * len(encoded)
        done = 0
        for group in batch.plan_groups([len(e.token_ids) for e in encoded]):
            answers = await worker.run(
                batch.analyze_encoded,
                self._loaded,
                [prompts[i] for i in group],
                [encoded[i] for i in group],
                config,
                plan,
                interrupt=job,
            )
            for i, result in zip(group, answers, strict=True):
                results[i] = result
            done += len(group)
            if on_progress is not None:
                await on_progress(done, len(encoded))
        return [r for r in results if r is not None]

    async def attribute(
        self, prompt: str, config: AttributionConfig | None = None
    ) -> AttributionResult:
        """Direct logit attribution of the targets (default: the final top-1) and the lens after
        each block's attention sub-layer, from one forward pass."""
        config = config or AttributionConfig()
        request = gate.Request("attribute", [prompt], config)
        return await self.compute(request, _attribute, self._loaded, prompt, config)

    async def analyze(
        self,
        prompt: str,
        config: AnalysisConfig | None = None,
        *,
        interrupt: Interrupt | None = None,
        plot: bool = False,
    ) -> AnalysisResult:
        """The lens of ``prompt``. It stops with :class:`CallInterrupted` past the process's
        ``call_timeout`` (or ``interrupt``'s deadline), or when the awaiting task is cancelled."""
        config = config or AnalysisConfig()
        request = gate.Request("lens", [prompt], config, plot=plot)
        return await self.compute(
            request, _analyze, self._loaded, prompt, config, interrupt=interrupt
        )

    async def compare(
        self,
        prompt: str,
        config: AnalysisConfig | None = None,
        *,
        prompt_b: str | None = None,
        other: ModelAnalyzer | None = None,
        lens_b: str | None = None,
    ) -> CompareResult:
        """This run against ``prompt_b`` on this model, the same prompt on ``other`` (a model
        with the same vocabulary), or the same run through ``lens_b``, layer by layer."""
        if prompt_b is None and other is None and lens_b is None:
            from lazarus_mcp.errors import InvalidRequestError

            raise InvalidRequestError("compare needs a second prompt or a second model (or lens_b)")
        loaded_b = other._loaded if other is not None else self._loaded
        config = config or AnalysisConfig()
        second = prompt_b if prompt_b is not None else prompt
        request = gate.Request("compare", [prompt, second], config, extra={"lens_b": lens_b})
        return await self.compute(
            request,
            _compare,
            self._loaded,
            loaded_b,
            prompt,
            second,
            config,
            lens_b,
            others=(loaded_b,) if other is not None else (),
        )

    def generate_steps(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        interrupt: Interrupt | None = None,
        plot: bool = False,
    ) -> GenerationStream:
        """The generation as it happens: ``async for step in analyzer.generate_steps(...)``
        yields each generated token's lens as the model writes it (one forward per token over
        the KV cache); ``await stream.result()`` gives the whole :class:`GenerationResult`."""
        from lazarus_mcp.runtime import generation
        from lazarus_mcp.schema.generation import GenerationConfig

        job = interrupt if interrupt is not None else _deadline()
        settings = config or GenerationConfig()
        request = gate.Request("generate", [prompt], settings, plot=plot)

        async def start() -> GenerationRun:
            # The gate, then the plan, the prompt's tokens and the cache: one job, before any
            # forward. Each token is then a job of its own (``runtime/generation.py``).
            return await self.compute(
                request, generation.start, self._loaded, prompt, settings, interrupt=job
            )

        return generation.GenerationStream(start, job)

    async def generate(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        on_step: StepCallback | None = None,
        interrupt: Interrupt | None = None,
        plot: bool = False,
    ) -> GenerationResult:
        """Generate from ``prompt`` and read the lens at every generated token: what each
        layer predicted before the model wrote it. ``on_step(step)`` is awaited per token."""
        stream = self.generate_steps(prompt, config, interrupt=interrupt, plot=plot)
        async for step in stream:
            if on_step is not None:
                await on_step(step)
        return await stream.result()
