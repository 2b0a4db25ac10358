"""One generation, a step at a time: the prompt through the engine's step mode, then each token
the model writes, with the lens read at every position that emits one.

:class:`GenerationRun` is synchronous and holds the KV cache between steps; the async layer
(``runtime/generation.py``) calls :meth:`GenerationRun.advance` once per worker job, so every
token is one job: progress is reported per token, a cancelled caller stops the run within one
step (the next job never starts; the current one stops between blocks), and other calls on the
worker interleave between tokens. The first step feeds the whole prompt (one forward over it,
the lens at its last position); each later step feeds the one token emitted before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lazarus_mcp.accel import blas
from lazarus_mcp.analyses.analysis import LensPlan, plan_lens
from lazarus_mcp.analyses.prompt_lens import LensRequest
from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.generation.cells import StepArrays, step_lens
from lazarus_mcp.generation.results import (
    generation_milestones,
    generation_step,
    worst_fidelity,
)
from lazarus_mcp.generation.sampling import Sampler, fresh_seed
from lazarus_mcp.generation.stopping import StopWatch, eos_token_ids
from lazarus_mcp.lens.readout import lens_name
from lazarus_mcp.lens.step import Steps, start_steps
from lazarus_mcp.lens.tokens import EncodedPrompt
from lazarus_mcp.runtime import limits
from lazarus_mcp.schema import Fidelity, LensUsed
from lazarus_mcp.schema.generation import (
    GenerationConfig,
    GenerationResult,
    GenerationStep,
    StopReason,
)

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


@contextmanager
def _whole_step(one_token: bool) -> Iterator[None]:
    """A one-token step runs as one graph: the call's deadline and cancellation are checked
    before and after it instead of between its blocks (an evaluation after every block cost
    SmolLM2-135M about as much as the lens). The prompt's forward keeps the checks between
    blocks: it may be long. A cancelled call still stops within one step."""
    job = limits.interrupt()
    if not one_token:
        yield
        return
    if job is not None:
        job.check()
        limits.set_interrupt(None)
    try:
        # One row: MKL's matrix-vector path (accel/blas.py); no batch to agree with.
        with blas.without_floor():
            yield
    finally:
        if job is not None:
            limits.set_interrupt(job)


class StepSource(Protocol):
    """Where a generation's steps come from: the model in this process (:class:`LocalSteps`),
    or a model split over processes (``distributed/``: each rank keeps its blocks' caches)."""

    def step(self, fed: list[int]) -> StepArrays:
        """Feed ``fed`` (the prompt, then the token emitted before), choose the next token and
        read the lens at the last fed position."""
        ...


@dataclass
class LocalSteps:
    """The model's own KV cache in this process (``lens.step``) and the seeded sampler."""

    request: LensRequest
    stepper: Steps
    sampler: Sampler

    def step(self, fed: list[int]) -> StepArrays:
        request = self.request
        tapped = self.stepper.feed(fed, outputs=sorted({*request.blocks, request.last}))
        return step_lens(
            request,
            {i: h[0, -1] for i, h in tapped.outputs.items()},
            tapped.logits[0, -1],
            self.sampler,
        )


@dataclass
class GenerationRun:
    loaded: LoadedModel
    prompt: str
    config: GenerationConfig
    plan: LensPlan
    encoded: EncodedPrompt
    seed: int
    source: StepSource
    eos: frozenset[int]
    watch: StopWatch
    steps: list[GenerationStep] = field(default_factory=list)
    stop_reason: StopReason | None = None
    stop_string: str | None = None
    text_end: int | None = None  # where a stop string cut the generated text
    fidelities: list[Fidelity] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def generated_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]

    def advance(self) -> GenerationStep | None:
        """Emit the next token and read the lens that emitted it; None once finished."""
        if self.finished:
            return None
        loaded = self.loaded
        # The first step reads the whole prompt; each later one the token emitted before it.
        fed = [self.steps[-1].token_id] if self.steps else list(self.encoded.token_ids)
        position = len(self.encoded.token_ids) - 1 + len(self.steps)
        # Over a pipeline the ranks check the deadline between blocks and stop in step (link).
        one_token = bool(self.steps) and isinstance(self.source, LocalSteps)
        with loaded.scope(), _whole_step(one_token):
            arrays = self.source.step(fed)
        step = generation_step(
            loaded.token_text, self.plan.tracked, len(self.steps), position, arrays
        )
        self.steps.append(step)
        self.fidelities.append(arrays.fidelity)
        self._check_stop()
        return step

    def _check_stop(self) -> None:
        if self.steps[-1].token_id in self.eos:
            self.stop_reason = "eos"
            return
        if self.config.stop:
            found = self.watch.find(self.decoded())
            if found is not None:
                self.text_end, self.stop_string = found
                self.stop_reason = "stop"
                return
        if len(self.steps) >= self.config.max_new_tokens:
            self.stop_reason = "max_tokens"

    def decoded(self) -> str:
        """The generated text so far (an end-of-sequence token left out)."""
        ids = self.generated_ids
        if self.stop_reason == "eos":
            ids = ids[:-1]
        return str(self.loaded.tokenizer.decode(ids, skip_special_tokens=False))

    def stop_at_deadline(self) -> None:
        """The call's time ran out between or inside a step: end with what was generated."""
        if not self.finished:
            self.stop_reason = "deadline"

    def result(self) -> GenerationResult:
        if self.stop_reason is None:
            raise RuntimeError("the generation has not finished")
        loaded = self.loaded
        info = loaded.info
        text = self.decoded()
        if self.text_end is not None:
            text = text[: self.text_end]
        scale = self.config.embedding_scale
        return GenerationResult(
            model=info,
            **self.encoded.described(self.prompt, loaded.token_text),
            embedding_scale=scale if scale is not None else info.embedding_scale,
            config=self.config,
            seed=self.seed,
            captured_layers=self.plan.layers,
            generated_token_ids=self.generated_ids,
            generated_text=text,
            stop_reason=self.stop_reason,
            stop_string=self.stop_string,
            steps=self.steps,
            milestones=generation_milestones(self.plan.tracked, self.steps),
            fidelity=worst_fidelity(self.fidelities),
            lens=LensUsed(**self.plan.request.lens.describe()),
        )


def start_generation(loaded: LoadedModel, prompt: str, config: GenerationConfig) -> GenerationRun:
    """Plan the lens, encode the prompt and make the cache; no forward yet. The request gate
    (``runtime/gate.py``, kind ``generate``) has checked the request before this job."""
    plan = plan_lens(loaded, config)
    encoded = encode_prompt(loaded.tokenizer, prompt, config.use_chat_template)
    # Greedy decoding draws nothing: its seed is 0 unless given, so its result is the same
    # field for field on every run.
    drawn = 0 if config.greedy else fresh_seed()
    seed = config.seed if config.seed is not None else drawn
    pipeline = getattr(loaded, "pipeline", None)
    source: StepSource
    if pipeline is not None:
        # Each rank keeps its own blocks' caches; the last rank samples (distributed/).
        source = pipeline.start_steps(loaded, plan.request, lens_name(config), config, seed)
    else:
        with loaded.scope():
            stepper = start_steps(
                loaded.model, plan.request.embedding_factor, loaded.sliding_windows
            )
            sampler = Sampler(config.temperature, config.top_p, seed)
        source = LocalSteps(plan.request, stepper, sampler)
    return GenerationRun(
        loaded=loaded,
        prompt=prompt,
        config=config,
        plan=plan,
        encoded=encoded,
        seed=seed,
        source=source,
        eos=eos_token_ids(loaded.info.path, loaded.tokenizer),
        watch=StopWatch(list(config.stop)),
    )


def generate_loaded(loaded: LoadedModel, prompt: str, config: GenerationConfig) -> GenerationResult:
    """The whole generation at once, synchronously, on the MLX worker thread."""
    run = start_generation(loaded, prompt, config)
    while run.advance() is not None:
        pass
    return run.result()
