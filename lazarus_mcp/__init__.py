"""lazarus-mcp: logit-lens introspection of language models on MLX.

Importing the package loads an optimized BLAS before MLX is imported (see ``blas.py``);
the public API lives in :mod:`lazarus_mcp.introspection`.
"""

from lazarus_mcp import blas as _blas

_blas.preload()

__version__ = "0.1.0"
