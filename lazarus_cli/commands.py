"""``lazarus introspect <tool>``: one command per tool spec, built from its input model.

Each input field becomes an option (spelled by the field's ``Cli`` metadata, else
``--field-name``); the values go through the same pydantic model as an MCP call's arguments, then
through the same core function (``tools.calls.invoke``) and so the same gate and deadline. What
only a command has is added here once for all: ``-m``'s loading options (``--dtype``,
``--device``), ``-o``/``--json``, ``--all-layers``, and the limit flags that raise the one
table's caps. A tool needs no CLI code; ``analyze`` adds its batch and picture options
(``lazarus_cli/analyze_extras.py``).

The whole command runs under one deadline: when it passes, the command says so (exit 2) and
writes no file.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lazarus_cli.options import (
    LIMIT_OPTIONS,
    Device,
    Dtype,
    raise_limits,
    setup_logging,
)
from lazarus_cli.outcome import check_writable, emit_text, fail, run_core, write_files
from lazarus_mcp.tools.spec import Cli, ToolSpec

T = TypeVar("T")


@dataclass
class Extras:
    """What a command adds to its tool's options (``analyze``: prompts, files, pictures)."""

    options: list[inspect.Parameter] = field(default_factory=list)
    # (values for the input model, the extra options) -> values; may fail()
    before: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    # Files the command will write, checked before any work.
    paths: Callable[[dict[str, Any]], list[Path]] | None = None
    # (result, extra options, deadline check) -> (file bytes, printed JSON, text, more files)
    finish: Callable[[Any, dict[str, Any]], tuple[bytes, bytes, str, dict[Path, bytes]]] | None = (
        None
    )


def cli_of(info: Any) -> Cli:
    found = [m for m in info.metadata if isinstance(m, Cli)]
    return found[0] if found else Cli()


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = text.find(": ")
    cut = text.find(". ")
    stops = [i for i in (end, cut) if i > 0]
    return text[: min(stops)] + "." if stops else text


def _scalar(annotation: Any) -> Any:
    """The option's type: a field's type without ``None``; lists stay lists."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _scalar(args[0]) if len(args) == 1 else str
    if origin is list:
        inner = typing.get_args(annotation)[0]
        return list[str] if inner is str else str
    if isinstance(annotation, type) and issubclass(annotation, (bool, int, float, str, Enum)):
        return annotation
    return str


def _field_options(spec: ToolSpec) -> tuple[list[inspect.Parameter], dict[str, Cli]]:
    params: list[inspect.Parameter] = []
    parsers: dict[str, Cli] = {}
    for name, info in spec.inputs.model_fields.items():
        cli = cli_of(info)
        if cli.hidden:
            continue
        parsers[name] = cli
        kind = str if cli.parse is not None else _scalar(info.annotation)
        flags = cli.flags or ("--" + name.replace("_", "-"),)
        help_text = cli.help or _first_sentence(info.description or name)
        required = info.is_required()
        if kind is bool:
            option = typer.Option(flags[0], *flags[1:], help=help_text)
            default: Any = bool(info.default) if not required else False
            annotation: Any = bool
        else:
            option = typer.Option(*flags, help=help_text)
            default = ... if required else None
            annotation = kind if required else kind | None
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[annotation, option],
            )
        )
    return params, parsers


_COMMON = [
    inspect.Parameter(
        "all_layers",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--all-layers", help="Every block.")],
    ),
    inspect.Parameter(
        "output",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None, typer.Option("-o", "--output", help="Write the result as JSON.")
        ],
    ),
    inspect.Parameter(
        "json_out",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--json", help="Print the JSON result instead of text.")
        ],
    ),
    inspect.Parameter(
        "dtype",
        inspect.Parameter.KEYWORD_ONLY,
        default=Dtype.auto,
        annotation=Annotated[
            Dtype,
            typer.Option(
                "--dtype",
                help="auto: the checkpoint's dtype on a GPU; on the CPU float32-accurate "
                "bfloat16 kernels where the CPU has them, float32 otherwise. native: as stored.",
            ),
        ],
    ),
    inspect.Parameter(
        "device",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Device | None, typer.Option("--device", help="MLX device (default: MLX's).")
        ],
    ),
    inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs on stderr.")],
    ),
    *LIMIT_OPTIONS,
]
_COMMON_NAMES = {p.name for p in _COMMON}


class CliSession:
    """Models opened with the command's --dtype and --device; progress on the terminal."""

    def __init__(self, dtype: Dtype, device: Device | None) -> None:
        from lazarus_cli.progress import TerminalProgress
        from lazarus_mcp.modeling.options import LoadOptions
        from lazarus_mcp.runtime.cache import default_cache

        self._cache = default_cache()
        self._options = LoadOptions(dtype=dtype.value, device=device.value if device else None)
        self.bar = TerminalProgress()

    @property
    def cache(self) -> Any:
        return self._cache

    async def open(self, model_id: str) -> Any:
        from lazarus_mcp.runtime.analyzer import ModelAnalyzer

        job = ModelAnalyzer.load(model_id, self._options, cache=self._cache)
        return await self.bar.wait(f"loading {model_id}", job)

    async def step(self, message: str, job: Awaitable[T]) -> T:
        return await job

    async def report(self, done: float, message: str) -> None:
        self.bar.note(message)


def _values(spec: ToolSpec, given: dict[str, Any], parsers: dict[str, Cli]) -> dict[str, Any]:
    from lazarus_mcp.errors import LazarusError

    values: dict[str, Any] = {}
    for name, cli in parsers.items():
        value = given.get(name)
        if value is None or value == [] or value is False:
            continue  # not given: the input model's default
        if cli.parse is not None and isinstance(value, str):
            try:
                value = cli.parse(value)
            except LazarusError as exc:
                flag = (cli.flags or ("--" + name.replace("_", "-"),))[0]
                message = str(exc)
                fail(message if message.startswith(name) else f"{flag} {message}")
        values[name] = value.value if isinstance(value, Enum) else value
    if given.get("all_layers") and "layer_strategy" in spec.inputs.model_fields:
        values["layer_strategy"] = "all"
    return values


def _validated(spec: ToolSpec, values: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        params = spec.validate(values)
        request = getattr(params, "request", None)
        if callable(request):
            request()  # builds the core's config, whose own checks say what is missing
        return params
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        fail(f"invalid {where}: {message}" if where else message)


def build_command(
    spec: ToolSpec, render: Callable[[Any], str] | None = None, extras: Extras | None = None
) -> Callable[..., None]:
    """The Typer command function of ``spec`` (register it with ``app.command(name)``)."""
    extras = extras or Extras()
    fields, parsers = _field_options(spec)
    common = [p for p in _COMMON if p.name != "all_layers" or "layer_strategy" in parsers]
    shown = render or spec.render

    def command(**given: Any) -> None:
        setup_logging(given["verbose"])
        raise_limits(given)
        values = _values(spec, given, parsers)
        if extras.before is not None:
            values = extras.before(values, given)
        params = _validated(spec, values)
        paths = [given["output"]] if given["output"] is not None else []
        paths += extras.paths(given) if extras.paths is not None else []
        for path in paths:
            check_writable(path)
        run(spec, params, given, shown, extras)

    names = {p.name for p in fields}
    clash = names & (_COMMON_NAMES | {p.name for p in extras.options})
    assert not clash, f"{spec.name}: options {clash} are already the command's own"
    parameters = [*extras.options, *fields, *common]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = spec.name
    command.__doc__ = _first_sentence(spec.doc)
    return command


def run(
    spec: ToolSpec,
    params: Any,
    given: dict[str, Any],
    render: Callable[[Any], str],
    extras: Extras,
) -> None:
    """The core call under the command's one deadline, then its files and output; past the
    deadline at any point: exit 2 and no file."""
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.runtime import limits
    from lazarus_mcp.schema import to_json
    from lazarus_mcp.tools.calls import invoke

    session = CliSession(given["dtype"], given["device"])
    deadline: list[limits.Interrupt] = []

    async def work() -> Any:
        with limits.call_deadline() as job:
            deadline.append(job)
            return await invoke(spec, session, params)

    result = run_core(work, on_error=session.bar.clear)
    job = deadline[0]
    try:
        job.check()
        with limits.within(job):
            finished = extras.finish(result, given) if extras.finish is not None else None
        if finished is not None:
            data, printed, text, files = finished
        else:
            data = to_json(result)
            printed, text, files = data + b"\n", render(result), {}
        job.check()
    except LazarusError as exc:
        session.bar.clear()
        fail(str(exc))
    output = given["output"]
    everything = {output: data} if output is not None else {}
    everything.update(files)
    write_files(everything)
    emit_text(printed, text, list(everything), given["json_out"])


def register(app: typer.Typer, spec: ToolSpec, **kwargs: Any) -> None:
    name = spec.command_name
    if name is not None:
        app.command(name)(build_command(spec, **kwargs))
