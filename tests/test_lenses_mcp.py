"""Lenses over MCP: the ``lens`` argument under ``--lens-dir`` only, ``compare``'s ``lens_b``,
and one-line error results for every refused lens (the server keeps serving)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from lazarus_mcp.lenses import jobs, seam
from lazarus_mcp.lenses.jacobian_fit import JacobianSettings
from lazarus_mcp.runtime import worker
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server
from tests.conftest import PARITY
from tests.test_mcp_server import error_line, ok

LLAMA = str(PARITY / "llama")
pytestmark = pytest.mark.anyio


@pytest.fixture
def lens_dir(tmp_path: Path) -> Iterator[Path]:
    from lazarus_mcp.modeling.loading import load

    loaded = worker.run_sync(load, LLAMA)
    allowed = tmp_path / "lenses"
    settings = JacobianSettings((0, 1, 2), loaded.info.num_layers - 1, skip_first=2)
    worker.run_sync(jobs.fit_jacobian_lens, loaded, [[0, *range(5, 25)]], allowed / "j", settings)
    seam.configure(allowed, required=True)
    try:
        yield allowed
    finally:
        seam.configure(None, required=False)


async def test_lens_argument_under_the_lens_dir(lens_dir: Path, tmp_path: Path) -> None:
    args = {"model": LLAMA, "prompt": "The capital of France is", "raw": True}
    async with Client(create_server(ModelCache())) as client:
        read = ok(await client.call_tool("analyze", {**args, "lens": "j"}))
        assert read["lens"]["kind"] == "jacobian"
        assert read["lens"]["path"] == str(lens_dir / "j")
        tracked = ok(
            await client.call_tool("track_tokens", {**args, "tokens": [" a"], "lens": "j"})
        )
        assert tracked["lens"]["kind"] == "jacobian"
        compared = ok(await client.call_tool("compare", {**args, "lens_b": "j"}))
        assert compared["a"]["lens"] == {"kind": "logit", "path": None, "fit": None}
        assert compared["b"]["lens"]["kind"] == "jacobian"
        for outside in ("../elsewhere", str(tmp_path), "/etc"):
            refused = await client.call_tool("analyze", {**args, "lens": outside})
            assert "outside the allowed lens directory" in error_line(refused)
        (lens_dir / "j" / "lens.safetensors").write_bytes(b"\xff" * 64)
        broken = await client.call_tool("analyze", {**args, "lens": "j"})
        assert "lies" in error_line(broken) or "header" in error_line(broken)
        logit = ok(await client.call_tool("analyze", args))
        assert logit["lens"]["kind"] == "logit" and "lens" not in logit["config"]


async def test_no_lens_dir_means_logit_only() -> None:
    seam.configure(None, required=True)
    try:
        args = {"model": LLAMA, "prompt": "x", "raw": True, "lens": "/tmp"}
        async with Client(create_server(ModelCache())) as client:
            refused = await client.call_tool("analyze", args)
            assert "--lens-dir" in error_line(refused)
    finally:
        seam.configure(None, required=False)


def test_the_lens_dir_option() -> None:
    """``lazarus-mcp --lens-dir DIR`` reaches the options ``run_server`` configures the seam
    from (required: an agent's server reads lenses only under it)."""
    from lazarus_mcp.server.main import parse_args

    assert parse_args(["--lens-dir", "/srv/lenses"]).lens_dir == Path("/srv/lenses")
    assert parse_args([]).lens_dir is None
