"""The public Python API.

from lazarus_mcp.introspection import ModelAnalyzer, AnalysisConfig, LayerStrategy
"""

from lazarus_mcp.analyzer import ModelAnalyzer, analyze_loaded
from lazarus_mcp.cache import ModelCache, default_cache
from lazarus_mcp.errors import (
    InvalidRequestError,
    LazarusError,
    ModelLoadError,
    ModelNotFoundError,
    TokenResolutionError,
    UnsupportedModelError,
)
from lazarus_mcp.loading import LoadOptions
from lazarus_mcp.models import (
    AnalysisConfig,
    AnalysisResult,
    LayerPrediction,
    LayerStrategy,
    ModelInfo,
    QuantizationInfo,
    TokenAtLayer,
    TokenEvolution,
    TokenProbability,
    to_json,
)

__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
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
    "analyze_loaded",
    "default_cache",
    "to_json",
]
