"""What ``analyze`` answers beyond one result: a batch's document and the heatmap image.

One tool answers one prompt (an :class:`AnalysisResult`) or several (an :class:`AnalysisBatch`).
MCP wants one object schema per tool, so the published schema keeps the single result's
properties (what clients and the tests read) and adds the batch as the other branch of an
``anyOf``; a structured result validates against exactly one branch.
"""

from __future__ import annotations

import base64
from typing import Any

from mcp.types import ImageContent

from lazarus_mcp.plots import Metric, render_heatmap
from lazarus_mcp.schema import AnalysisBatch, AnalysisResult


def analyze_output_schema() -> dict[str, Any]:
    single = AnalysisResult.model_json_schema()
    batch = AnalysisBatch.model_json_schema()
    defs = {**single.pop("$defs", {}), **batch.pop("$defs", {})}
    results = batch["properties"]["results"]
    return {
        "type": "object",
        "title": "AnalysisResult or AnalysisBatch",
        "description": f"{single.get('description', '')} With 'prompts': "
        "{results: [one such result per prompt, in order]}.",
        "properties": single["properties"],
        "anyOf": [
            {"required": single["required"]},
            {"properties": {"results": results}, "required": ["results"]},
        ],
        "$defs": defs,
    }


def heatmap_images(results: list[AnalysisResult], metric: Metric) -> list[ImageContent]:
    """One PNG heatmap per result (matplotlib; called off the event loop)."""
    return [
        ImageContent(
            type="image",
            data=base64.b64encode(render_heatmap(result, "png", metric)).decode(),
            mime_type="image/png",
        )
        for result in results
    ]
