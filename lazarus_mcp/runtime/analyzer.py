"""The async analyzer: the one core behind the Python API, the CLI and the MCP server.

Importing it imports no MLX: process setup (the BLAS preload) happens at the first load, on the
worker thread, before MLX is imported (see ``runtime/process.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime import limits, worker
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
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.runtime.generation import GenerationStream
    from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult, GenerationStep

ProgressCallback = Callable[[int, int], Awaitable[None]]
StepCallback = Callable[["GenerationStep"], Awaitable[None]]


def _analyze(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> AnalysisResult:
    from lazarus_mcp.lens.analysis import analyze_loaded

    return analyze_loaded(loaded, prompt, config)


def _attribute(loaded: LoadedModel, prompt: str, config: AttributionConfig) -> AttributionResult:
    from lazarus_mcp.lens.attribution import attribute_loaded

    return attribute_loaded(loaded, prompt, config)


def _compare(
    a: LoadedModel, b: LoadedModel, prompt_a: str, prompt_b: str, config: AnalysisConfig
) -> CompareResult:
    from lazarus_mcp.lens.compare import compare_loaded

    return compare_loaded(a, b, prompt_a, prompt_b, config)


def _deadline() -> Interrupt:
    """A job's deadline from the process's ``call_timeout`` (runtime/limits.py)."""
    return Interrupt.after(limits.current().call_timeout)


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
    ) -> _Opening:
        return _Opening(model_id, LoadOptions(dtype=dtype, device=device), cache or default_cache())

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

    async def analyze_batch(
        self,
        prompts: list[str],
        config: AnalysisConfig | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> list[AnalysisResult]:
        """One result per prompt, in order. Prompts of similar length run through the model
        together (padded), a group per forward pass; ``on_progress(done, total)`` is awaited
        after each group with the number of prompts done."""
        from lazarus_mcp.lens import batch

        config = config or AnalysisConfig()
        plan, encoded = await worker.run(
            batch.prepare, self._loaded, list(prompts), config, interrupt=_deadline()
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
                interrupt=_deadline(),
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
        return await worker.run(_attribute, self._loaded, prompt, config, interrupt=_deadline())

    async def analyze(
        self,
        prompt: str,
        config: AnalysisConfig | None = None,
        *,
        interrupt: Interrupt | None = None,
    ) -> AnalysisResult:
        """The lens of ``prompt``. It stops with :class:`CallInterrupted` past the process's
        ``call_timeout`` (or ``interrupt``'s deadline), or when the awaiting task is cancelled."""
        job = interrupt if interrupt is not None else _deadline()
        config = config or AnalysisConfig()
        return await worker.run(_analyze, self._loaded, prompt, config, interrupt=job)

    async def compare(
        self,
        prompt: str,
        config: AnalysisConfig | None = None,
        *,
        prompt_b: str | None = None,
        other: ModelAnalyzer | None = None,
    ) -> CompareResult:
        """This run against ``prompt_b`` on this model, or the same prompt on ``other`` (a model
        with the same vocabulary), layer by layer."""
        if prompt_b is None and other is None:
            from lazarus_mcp.errors import InvalidRequestError

            raise InvalidRequestError("compare needs a second prompt or a second model")
        loaded_b = other._loaded if other is not None else self._loaded
        return await worker.run(
            _compare,
            self._loaded,
            loaded_b,
            prompt,
            prompt_b if prompt_b is not None else prompt,
            config or AnalysisConfig(),
            interrupt=_deadline(),
        )

    def generate_steps(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        interrupt: Interrupt | None = None,
    ) -> GenerationStream:
        """The generation as it happens: ``async for step in analyzer.generate_steps(...)``
        yields each generated token's lens as the model writes it (one forward per token over
        the KV cache); ``await stream.result()`` gives the whole :class:`GenerationResult`."""
        from lazarus_mcp.runtime.generation import GenerationStream
        from lazarus_mcp.schema.generation import GenerationConfig

        job = interrupt if interrupt is not None else _deadline()
        return GenerationStream(self._loaded, prompt, config or GenerationConfig(), job)

    async def generate(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        on_step: StepCallback | None = None,
        interrupt: Interrupt | None = None,
    ) -> GenerationResult:
        """Generate from ``prompt`` and read the lens at every generated token: what each
        layer predicted before the model wrote it. ``on_step(step)`` is awaited per token."""
        stream = self.generate_steps(prompt, config, interrupt=interrupt)
        async for step in stream:
            if on_step is not None:
                await on_step(step)
        return await stream.result()
