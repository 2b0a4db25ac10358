"""The part every per-prompt result opens with: the model and the prompt as the model saw it.

``AnalysisResult``, ``AttributionResult`` and each side of a ``CompareResult`` start with the
same seven fields in the same order; they inherit them from here so the three contracts cannot
drift apart (pydantic serializes a base's fields first, so the JSON is unchanged).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from lazarus_mcp.schema.model import ModelInfo


class PromptRun(BaseModel):
    """One model on one prompt: what was tokenized and which position is read."""

    model: ModelInfo
    prompt: str
    text_seen: str = Field(description="The text that was tokenized (after the chat template).")
    chat_template_applied: bool
    tokens: list[str]
    token_ids: list[int]
    position: int = Field(description="Index of the analyzed token (the last one).")
