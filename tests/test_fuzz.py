"""Property-based fuzzing of every tool's arguments through an in-memory client (hypothesis).

Arguments are drawn around each tool's schema: the real argument names with values of any JSON
shape (and well-typed ones, so calls get past validation into the core), plus unknown names.
``LAZARUS_FUZZ_EXAMPLES`` sets the examples per tool (40 in CI). Property: every call ends in
a result that matches the tool's output model or in a one-line error result, never an exception
or a protocol error; and a good call succeeds afterwards.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from pydantic import TypeAdapter

from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server
from lazarus_mcp.tools import TOOLS
from tests.conftest import PARITY

LLAMA = str(PARITY / "llama")
GEMMA = str(PARITY / "gemma")
CACHE = ModelCache(max_models=2)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(min_size=0, max_size=200) | st.sampled_from(["Hi", " Paris", "", "\x00", "\ud800"])
typed = {
    "model": st.sampled_from([LLAMA, GEMMA, "demo", "/no/such", "../../etc", "/dev/zero", "a/b"])
    | texts,
    "prompt": texts,
    "layer_strategy": st.sampled_from(["all", "evenly_spaced", "first_last", "custom", "x"]),
    "layer_step": st.integers(min_value=-3, max_value=70),
    "layers": st.lists(st.integers(min_value=-10, max_value=10), max_size=6) | st.none(),
    "top_k": st.integers(min_value=-2, max_value=120),
    "track_tokens": st.lists(texts, max_size=4),
    "tokens": st.lists(texts, max_size=4),
    "raw": st.booleans(),
    "embedding_scale": st.floats(allow_nan=True, allow_infinity=True) | st.none(),
}


def arguments(tool: Any) -> st.SearchStrategy[dict[str, Any]]:
    names = list(tool.inputs.model_fields)
    values = {name: typed.get(name, json_values) | json_values for name in names}
    known = st.fixed_dictionaries({}, optional=values)
    unknown = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=2)
    return st.one_of(known, st.builds(lambda a, b: {**b, **a}, known, unknown))


async def call(tool_name: str, args: dict[str, Any]) -> Any:
    async with Client(create_server(CACHE)) as client:
        with anyio.fail_after(60):
            return await client.call_tool(tool_name, args)


def check(tool: Any, args: dict[str, Any]) -> None:
    result = anyio.run(call, tool.name, args)
    text = result.content[0].text if result.content else ""
    if result.is_error:
        assert result.structured_content is None
        assert text and "\n" not in text and "Traceback" not in text, text
        assert "internal error" not in text, (args, text)
    else:
        TypeAdapter(tool.result).validate_python(result.structured_content)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_every_call_ends_in_a_result_or_an_error_result(tool: Any) -> None:
    @settings(
        max_examples=int(os.environ.get("LAZARUS_FUZZ_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(arguments(tool))
    def fuzz(args: dict[str, Any]) -> None:
        check(tool, args)

    fuzz()
    good = anyio.run(call, "analyze", {"model": LLAMA, "prompt": "Hi", "raw": True})
    assert not good.is_error
