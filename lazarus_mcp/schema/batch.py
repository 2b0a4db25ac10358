"""Several prompts' results in one document (the MCP ``analyze`` tool given ``prompts``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lazarus_mcp.schema.analysis import AnalysisResult


class AnalysisBatch(BaseModel):
    """One result per prompt, in the order the prompts were given."""

    results: list[AnalysisResult] = Field(description="One result per prompt, in input order.")
