"""``lazarus lens fit-jacobian | train-tuned | import | info``: making and inspecting LENS_DIRs.

Options -> core (``lazarus_mcp.lenses``) on the MLX worker thread -> one summary. Every core
error is one ``error:`` line with exit status 2. A fit stopped by ``--time-limit`` or Ctrl-C
keeps its checkpoint in LENS_DIR; the same command resumes it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lazarus_cli.main import VerboseOpt, app
from lazarus_cli.options import Dtype, setup_logging
from lazarus_cli.outcome import fail

if TYPE_CHECKING:
    from lazarus_mcp.lenses.lens_dir import LensFile
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.runtime.analyzer import ModelAnalyzer

lens_app = typer.Typer(help="Fit, train, import and inspect tuned and Jacobian lenses.")

ModelOpt = Annotated[
    str, typer.Option("-m", "--model", help="Local directory, Hugging Face id, or 'demo'.")
]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Weights dtype (auto: the model's).")]

OutOpt = Annotated[Path, typer.Option("-o", "--output", help="The lens directory to write.")]
PromptsOpt = Annotated[
    Path | None,
    typer.Option("--prompts-file", help='One prompt per line, or .jsonl of {"text": ...}.'),
]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="Tokenize the text alone (default: BOS + text, as TL does).")
]
HeldOpt = Annotated[
    int | None,
    typer.Option("--held-out", min=0, help="Sequences kept out of the fit to measure it."),
]
TimeOpt = Annotated[
    float | None, typer.Option("--time-limit", min=1, help="Seconds before the run stops.")
]


class _Bar:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.began = time.monotonic()
        self.enabled = sys.stderr.isatty()

    def draw(self, done: float, total: float, extra: str = "") -> None:
        if not self.enabled:
            return
        filled = round(28 * done / max(total, 1e-9))
        bar = "#" * filled + "-" * (28 - filled)
        elapsed = time.monotonic() - self.began
        sys.stderr.write(f"\r\033[K[{bar}] {self.what} {extra} ({elapsed:.0f} s)")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _core(work: Any, drain: Any = None, seconds: float | None = None) -> Any:
    """Await ``work()`` (a core call); core errors become one line. On Ctrl-C, ``drain()`` waits
    for the interrupted job to stop (it saves its checkpoint between steps)."""
    import anyio

    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.runtime.limits import CallInterrupted

    try:
        return anyio.run(work)
    except KeyboardInterrupt:
        if drain is not None:
            anyio.run(drain)
        fail("interrupted; the checkpoint in the lens directory is kept: run again to resume")
    except CallInterrupted:
        if seconds is None:
            fail("interrupted; the checkpoint in the lens directory is kept: run again to resume")
        fail(
            f"stopped at --time-limit {seconds:g} s; the checkpoint in the lens directory is "
            "kept: run the same command again to resume"
        )
    except LazarusError as exc:
        fail(str(exc))
    except (ValueError, OSError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _on_worker(analyzer: ModelAnalyzer, fn: Any, *args: Any, seconds: float | None = None) -> Any:
    """``fn(*args)`` on the MLX worker through the analyzer (the one way there), under an
    optional deadline. The jobs check their own memory need against the limits' budget."""
    from lazarus_mcp.runtime.gate import Request
    from lazarus_mcp.runtime.limits import Interrupt

    interrupt = Interrupt.after(seconds) if seconds else Interrupt()
    request = Request("model")

    async def work() -> Any:
        return await analyzer.compute(request, fn, *args, interrupt=interrupt)

    async def drain() -> None:
        # Queued behind the cancelled job: returns once the worker has let it go.
        interrupt.cancel()
        await analyzer.compute(request, int)

    return _core(work, drain, seconds)


def _load(model: str, dtype: Dtype) -> ModelAnalyzer:
    from lazarus_mcp.runtime.analyzer import ModelAnalyzer

    async def work() -> ModelAnalyzer:
        return await ModelAnalyzer.from_pretrained(model, dtype=dtype.value)

    analyzer: ModelAnalyzer = _core(work)
    return analyzer


def _layers(text: str) -> list[int]:
    from lazarus_mcp.errors import InvalidRequestError
    from lazarus_mcp.tools.fields import parse_int_list

    try:
        return parse_int_list(text)
    except InvalidRequestError as exc:
        fail(f"--layers {exc}")


def _split(items: list[list[int]], held: int | None) -> tuple[list[list[int]], list[list[int]]]:
    count = held if held is not None else (len(items) // 10 if len(items) >= 10 else 0)
    if count >= len(items):
        fail(f"--held-out {count} leaves nothing to fit on ({len(items)} sequences)")
    return (items[: len(items) - count], items[len(items) - count :]) if count else (items, [])


def _tokens(loaded: LoadedModel, prompts_file: Path, raw: bool) -> list[list[int]]:
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.lenses.corpus import encode, read_prompts

    try:
        prompts = read_prompts(prompts_file)
    except LazarusError as exc:
        fail(str(exc))
    return [encode(loaded.tokenizer, text, raw) for text in prompts]


def _blocks(layers: list[int]) -> str:
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]} ({len(layers)})"
    return ", ".join(str(i) for i in layers)


def _summary(lens: LensFile, wrote: bool = True) -> str:
    c = lens.config
    lines = [
        f"{c.kind} lens for {c.model.describe()}",
        f"  maps blocks {_blocks(c.layers)}" + (" and the embedding output" if c.embedding else ""),
    ]
    for key in ("made_by", "imported_from", "n_prompts", "tokens", "steps_done", "seconds"):
        if key in c.provenance:
            lines.append(f"  {key}: {c.provenance[key]}")
    if c.held_out is not None:
        h = c.held_out
        lines.append(f"  held-out KL (nats, {h.tokens} tokens): block  logit  {c.kind}")
        for layer, a, b in zip(h.layers, h.logit_kl, h.lens_kl, strict=True):
            lines.append(f"    {layer:>4}  {a:8.3f}  {b:8.3f}")
        mean_a = sum(h.logit_kl) / len(h.logit_kl)
        mean_b = sum(h.lens_kl) / len(h.lens_kl)
        lines.append(f"    mean  {mean_a:8.3f}  {mean_b:8.3f}  (ratio {mean_b / mean_a:.2f})")
    if lens.path is not None and wrote:
        lines.append(f"Wrote {lens.path}")
    return "\n".join(lines)


@lens_app.command("fit-jacobian")
def fit_jacobian(
    model: ModelOpt,
    output: OutOpt,
    prompts_file: PromptsOpt = None,
    raw: RawOpt = False,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Source blocks, e.g. 0,4,8 (default: 0..N-2).")
    ] = None,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", min=2)] = 128,
    skip_first: Annotated[int, typer.Option("--skip-first", min=0)] = 16,
    dim_batch: Annotated[
        int, typer.Option("--dim-batch", min=1, help="Jacobian rows per backward batch.")
    ] = 32,
    held: HeldOpt = None,
    time_limit: TimeOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Fit a Jacobian lens (TransformerLens's estimator) on a prompts file, in MLX."""
    setup_logging(verbose)
    if prompts_file is None:
        fail("--prompts-file is required")
    from lazarus_mcp.lenses import jobs
    from lazarus_mcp.lenses.jacobian_fit import FitProgress, JacobianSettings

    analyzer = _load(model, dtype)
    loaded = analyzer.loaded
    n = loaded.info.num_layers
    sources = sorted({i % n for i in _layers(layers)} if layers else set(range(n - 1)))
    if n - 1 in sources:
        fail(f"block {n - 1} is the target itself: its Jacobian lens is the identity")
    token_lists, held_lists = _split(_tokens(loaded, prompts_file, raw), held)
    settings = JacobianSettings(tuple(sources), n - 1, skip_first, max_seq_len, dim_batch)
    bar = _Bar("fitting J-lens")

    def progress(p: FitProgress) -> None:
        bar.draw(p.prompt + p.rows / p.d_model, p.prompts, f"prompt {p.prompt + 1}/{p.prompts}")

    lens = _on_worker(
        analyzer,
        jobs.fit_jacobian_lens,
        loaded,
        token_lists,
        output,
        settings,
        [t[:max_seq_len] for t in held_lists],
        str(prompts_file),
        progress,
        seconds=time_limit,
    )
    bar.clear()
    typer.echo(_summary(lens))


@lens_app.command("train-tuned")
def train_tuned(
    model: ModelOpt,
    output: OutOpt,
    prompts_file: PromptsOpt = None,
    self_generated: Annotated[
        int | None,
        typer.Option("--self-generated", min=2, help="Train on N sequences the model samples."),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1)] = 100,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    seq_len: Annotated[int, typer.Option("--seq-len", min=4, help="Tokens per sequence.")] = 128,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per step.")] = 2,
    raw: RawOpt = False,
    held: HeldOpt = None,
    time_limit: TimeOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Train a tuned lens (SGD Nesterov, lr 0.1, wd 1e-3, linear decay) in MLX."""
    setup_logging(verbose)
    if (prompts_file is None) == (self_generated is None):
        fail("give exactly one of --prompts-file and --self-generated")
    from lazarus_mcp.lenses import corpus, jobs
    from lazarus_mcp.lenses.tuned_train import TrainProgress, TunedRecipe

    analyzer = _load(model, dtype)
    loaded = analyzer.loaded
    bos = corpus.bos_id(loaded.tokenizer)
    if prompts_file is not None:
        sequences = corpus.chunked(_tokens(loaded, prompts_file, raw), seq_len, bos)
        source = str(prompts_file)
    else:
        assert self_generated is not None
        start = bos if bos is not None else 0
        sequences = _on_worker(
            analyzer, corpus.sample_sequences, loaded.model, self_generated, seq_len, start, seed
        )
        source = f"self-generated: {self_generated} x {seq_len} tokens, seed {seed}"
    if len(sequences) < 2:
        fail(f"the text gives {len(sequences)} sequence(s) of {seq_len} tokens; need at least 2")
    train, held_seqs = _split(sequences, held)
    recipe = TunedRecipe(steps=steps, batch_sequences=batch, seed=seed)
    bar = _Bar("training tuned lens")

    def progress(p: TrainProgress) -> None:
        bar.draw(p.step, p.steps, f"step {p.step}/{p.steps} loss {p.loss:.2f}")

    lens = _on_worker(
        analyzer,
        jobs.train_tuned_lens,
        loaded,
        train,
        output,
        recipe,
        held_seqs,
        source,
        time_limit,
        progress,
    )
    bar.clear()
    typer.echo(_summary(lens))


@lens_app.command("import")
def import_lens(
    source: Annotated[Path, typer.Argument(help="A tuned-lens dir or a Jacobian-lens .pt file.")],
    model: ModelOpt,
    output: OutOpt,
    dtype: DtypeOpt = Dtype.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Import a published tuned lens or Jacobian lens (needs PyTorch) for MODEL."""
    setup_logging(verbose)
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.lenses.importers import import_lens as convert
    from lazarus_mcp.lenses.lens_dir import load_lens, save_lens
    from lazarus_mcp.lenses.readout import identity_of

    analyzer = _load(model, dtype)
    identity = _on_worker(analyzer, identity_of, analyzer.loaded)
    try:
        lens = convert(source, identity)
        save_lens(output, lens)
        written = load_lens(output)
    except LazarusError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(_summary(written))


@lens_app.command("info")
def info(
    lens_dir: Annotated[Path, typer.Argument(help="A lens directory.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print config.json as checked.")] = False,
) -> None:
    """Kind, model, layers, how the lens was made, its held-out fit."""
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.lenses.lens_dir import load_lens

    try:
        lens = load_lens(lens_dir)
    except LazarusError as exc:
        fail(str(exc))
    if json_out:
        sys.stdout.write(json.dumps(lens.config.to_json(), indent=2) + "\n")
    else:
        typer.echo(_summary(lens, wrote=False))


app.add_typer(lens_app, name="lens")
