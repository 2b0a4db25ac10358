"""lazarus-mcp: logit-lens introspection of language models on MLX.

The public API lives in :mod:`lazarus_mcp.introspection`. Importing the package does nothing
else: process setup (the BLAS preload) happens at the first model load or at our entry points
(``runtime/process.py``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lazarus-mcp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
