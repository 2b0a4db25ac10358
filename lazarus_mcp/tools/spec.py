"""A tool, declared once: its input model, its core function, its result model, its renderer.

From one :class:`ToolSpec` come the MCP tool (``server/app.py``: name, description, input and
output schema, one-line errors), the ``lazarus`` command (``lazarus_cli/commands.py``: one option
per input field, spelled by :class:`Cli` where the default will not do) and the Python call
(``introspection.call_tool``). Before this, a tool cost about twelve files (an MCP input model,
its doc, its body, the TOOLS entry, a renderer, the server instructions, a Typer command and its
renderer, an analyzer method, a shim, the exports); now a tool is one module of ``tools/`` and
one line of the registry (``tools/__init__.py``). See /work/notes/TOOLSPEC.md.

The core function gets a :class:`Session`: how the interface opens models (the server's cache,
the CLI's dtype and device) and reports progress. It calls :class:`ModelAnalyzer` methods, which
pass the request gate and the call's deadline (``runtime/gate.py``), so no tool can skip them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from lazarus_mcp.runtime.analyzer import ModelAnalyzer
    from lazarus_mcp.runtime.cache import ModelCache

T = TypeVar("T")


class Input(BaseModel):
    """Every tool's arguments. An unknown argument is a typo the caller should hear about, not a
    silently ignored option; integers are integers (``"0"`` and ``true`` are not positions)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Cli:
    """How an input field is spelled on the command line (``Annotated[..., Cli(...)]``).

    ``flags``: the option's names (default ``--field-name``); ``parse``: text to the field's
    value for fields that are not plain text, numbers or flags (``'0,4,-1'`` to ``[0, 4, -1]``);
    ``hidden``: a field the command line does not offer (it has its own way, or no use)."""

    flags: tuple[str, ...] = ()
    help: str | None = None
    parse: Callable[[str], Any] | None = None
    hidden: bool = False


class Session(Protocol):
    """What a tool's core function needs from the interface that called it."""

    @property
    def cache(self) -> ModelCache: ...

    async def open(self, model_id: str) -> ModelAnalyzer:
        """The model's analyzer (loading it if needed), reported as a step."""
        ...

    async def step(self, message: str, job: Awaitable[T]) -> T:
        """Await ``job`` as the next step of the call's progress."""
        ...

    async def report(self, done: float, message: str) -> None:
        """Progress inside a step (``done`` counts steps, fractions allowed)."""
        ...


Run = Callable[[Session, Any], Awaitable[Any]]


def _always(cache: ModelCache, params: Any) -> bool:
    return True


@dataclass(frozen=True)
class ToolSpec:
    """One tool. ``run(session, params) -> result``; ``render(result) -> text`` (the MCP text
    content and the command's output without ``--json``)."""

    name: str
    doc: str  # for the agent choosing a tool; its first sentence is the command's help
    inputs: type[Input]
    result: Any  # a pydantic model, or a union of them with ``output_schema`` given
    run: Run
    render: Callable[[Any], str]
    steps: int = 2  # progress steps: opening the model, the work
    command: str | None = ""  # the CLI command ('' : the name with dashes; None: none)
    # Whether a call with these arguments waits for the MLX worker (the queue cap applies).
    needs_worker: Callable[[ModelCache, Any], bool] = _always
    output_schema: Callable[[], dict[str, Any]] | None = None
    # PNG images of a result for the MCP image content (``analyze``'s heatmap).
    images: Callable[[Any, Any], list[bytes]] | None = None
    # Arguments of a good call on the demo model: the docs' example, and what the hostile tests
    # start from (they parametrize over every tool of the registry, so a new tool is covered).
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def command_name(self) -> str | None:
        if self.command is None:
            return None
        return self.command or self.name.replace("_", "-")

    def validate(self, arguments: dict[str, Any]) -> Any:
        return self.inputs.model_validate(arguments)


# Lean schemas: what an agent's client puts in the model's context ----------------------------


def _strip_titles(node: Any) -> Any:
    """pydantic titles every property with its own name (a fifth of an input schema)."""
    if isinstance(node, dict):
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def input_schema(spec: ToolSpec) -> dict[str, Any]:
    return _strip_titles(spec.inputs.model_json_schema(by_alias=True))


_SIMPLE = ("string", "integer", "number", "boolean")


def lean_output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The result's top-level fields with their descriptions, nested types left open.

    Clients validate structured content against it; agents read the result itself, whose
    fields say what they are. The full nested schemas were 59 KB of 72 KB of ``tools/list``."""
    full = model.model_json_schema(mode="serialization")
    properties: dict[str, Any] = {}
    for name, prop in full.get("properties", {}).items():
        lean: dict[str, Any] = {}
        if prop.get("type") in _SIMPLE:
            lean["type"] = prop["type"]
        elif prop.get("type") == "array":
            lean["type"] = "array"
        if "description" in prop:
            lean["description"] = prop["description"]
        properties[name] = lean
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if full.get("description"):
        schema["description"] = " ".join(str(full["description"]).split())
    if full.get("required"):
        schema["required"] = full["required"]
    return schema


def output_schema(spec: ToolSpec) -> dict[str, Any]:
    if spec.output_schema is not None:
        return spec.output_schema()
    return lean_output_schema(spec.result)
