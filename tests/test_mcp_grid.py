"""The MCP analyze tool's grid, batches and heatmap image, in memory on real checkpoints."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from mcp import Client
from mcp.types import ImageContent

from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from lazarus_mcp.server.app import create_server
from tests.conftest import PARITY
from tests.test_mcp_server import error_line, ok

pytestmark = pytest.mark.anyio

GEMMA3 = str(PARITY / "gemma3-text")
PROMPTS = ["The capital of France is", "Hi", "Once upon a time there was a"]


async def test_grid_batch_and_image_match_the_api() -> None:
    cache = ModelCache()
    args: dict[str, Any] = {
        "model": GEMMA3,
        "layer_strategy": "all",
        "raw": True,
        "positions": "all",
        "include_embeddings": True,
        "track_tokens": [" the"],
    }
    async with Client(create_server(cache)) as client:
        one = await client.call_tool("analyze", {**args, "prompt": PROMPTS[0], "plot": True})
        many = ok(await client.call_tool("analyze", {**args, "prompts": PROMPTS}))
        both = await client.call_tool("analyze", {**args, "prompt": "a", "prompts": ["b"]})
        rank = await client.call_tool(
            "analyze",
            {**args, "prompt": "a", "track_tokens": [], "plot": True, "plot_metric": "rank"},
        )
        far = await client.call_tool("analyze", {**args, "prompt": "Hi", "positions": [40]})
    single = ok(one)
    [image] = [b for b in one.content if isinstance(b, ImageContent)]
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Grid (per position" in one.content[0].text
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        use_chat_template=False,
        positions="all",
        include_embeddings=True,
        track_tokens=[" the"],
    )
    analyzer = await ModelAnalyzer.load(GEMMA3, cache=cache)
    expected = await analyzer.analyze(PROMPTS[0], config)
    assert single == expected.model_dump(mode="json")
    assert single["grid"][0]["layer_predictions"][0]["layer_idx"] is None
    batch = await analyzer.analyze_batch(PROMPTS, config)
    assert many == {"results": [r.model_dump(mode="json") for r in batch]}
    assert [r["prompt"] for r in many["results"]] == PROMPTS
    assert "not both" in error_line(both)
    assert "needs a tracked token" in error_line(rank)
    assert "position 40 is out of range" in error_line(far)
