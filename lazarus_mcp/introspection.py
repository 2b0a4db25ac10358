"""The public Python API.

from lazarus_mcp.introspection import ModelAnalyzer, AnalysisConfig, LayerStrategy

Importing it imports no MLX (a test checks): the first model load sets the process up.
"""

from lazarus_mcp.errors import (
    InvalidRequestError,
    LazarusError,
    ModelLoadError,
    ModelNotFoundError,
    TokenResolutionError,
    UnsupportedModelError,
)
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache, default_cache
from lazarus_mcp.schema import (
    AnalysisConfig,
    AnalysisResult,
    AttributionConfig,
    AttributionResult,
    CompareResult,
    LayerPrediction,
    LayerStrategy,
    ModelInfo,
    QuantizationInfo,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
    to_json,
)
from lazarus_mcp.tools.calls import call_tool

__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
    "AttributionConfig",
    "AttributionResult",
    "CompareResult",
    "InvalidRequestError",
    "LayerPrediction",
    "LayerStrategy",
    "LazarusError",
    "LoadOptions",
    "ModelAnalyzer",
    "ModelCache",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "QuantizationInfo",
    "TokenAtLayer",
    "TokenEvolution",
    "TokenProbability",
    "TokenResolutionError",
    "UnsupportedModelError",
    "call_tool",
    "default_cache",
    "to_json",
]
