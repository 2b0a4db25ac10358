"""The result contract: pydantic models shared by the Python API, the CLI and the MCP server.

Every interface returns these models and serializes them the same way (``model_dump(mode="json")``
or :func:`to_json`): an agent's tool result and ``lazarus ... -o file.json`` agree field for
field. One module per result family; this package re-exports them.
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel

from lazarus_mcp.schema.analysis import (
    CUSTOM_NEEDS_LAYERS,
    AnalysisConfig,
    AnalysisResult,
    LayerPrediction,
    LayerStrategy,
    LensUsed,
    PositionLens,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
)
from lazarus_mcp.schema.attribution import (
    AttributionComponent,
    AttributionConfig,
    AttributionResult,
    AttributionTarget,
    BlockAttribution,
    BlockPrediction,
    SublayerPrediction,
    TrackedProbability,
)
from lazarus_mcp.schema.batch import AnalysisBatch
from lazarus_mcp.schema.compare import CompareLayer, CompareResult, CompareSide
from lazarus_mcp.schema.fidelity import Fidelity, Milestones, TopChange
from lazarus_mcp.schema.model import ModelInfo, QuantizationInfo, RequantizationInfo
from lazarus_mcp.schema.prompt import PromptRun

__all__ = [
    "CUSTOM_NEEDS_LAYERS",
    "AnalysisBatch",
    "AnalysisConfig",
    "AnalysisResult",
    "AttributionComponent",
    "AttributionConfig",
    "AttributionResult",
    "AttributionTarget",
    "BlockAttribution",
    "BlockPrediction",
    "CompareLayer",
    "CompareResult",
    "CompareSide",
    "Fidelity",
    "LayerPrediction",
    "LayerStrategy",
    "LensUsed",
    "Milestones",
    "ModelInfo",
    "PositionLens",
    "PromptRun",
    "QuantizationInfo",
    "RequantizationInfo",
    "SublayerPrediction",
    "TokenAtLayer",
    "TokenEvolution",
    "TokenProbability",
    "TopChange",
    "TrackedProbability",
    "to_json",
]


def to_json(model: BaseModel, indent: bool = True) -> bytes:
    """The one serialization every interface writes."""
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(model.model_dump(mode="json"), option=option)
