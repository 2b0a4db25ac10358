"""How to run a model, as every interface asks for it. No MLX here: importable for its types."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("auto", "native", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoadOptions:
    """How to run a model: ``auto`` keeps the checkpoint's dtype on a GPU; on the CPU it runs
    bfloat16 and affine-quantized checkpoints through lazarus's kernels, float32-accurate, where
    the CPU has AVX512-BF16, and everything else in float32 through BLAS. ``bfloat16`` on such
    a CPU uses the kernel with bfloat16 inputs (quantized weights dequantized to bfloat16);
    ``native`` keeps the checkpoint as stored, computed by MLX's own ops (quantized too)."""

    dtype: str = "auto"
    device: str | None = None
    # GGUF files: quantize the dequantized (K-quant) layers to MLX affine at this many bits.
    requantize: int | None = None
    # Split over processes (lazarus_mcp/distributed): N local ranks, or a hostfile's hosts.
    shards: int = 1
    hostfile: str | None = None
    backend: str | None = None

    @property
    def sharded(self) -> bool:
        return self.shards > 1 or self.hostfile is not None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.device not in (None, "cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, not {self.device!r}")
        if self.requantize not in (None, 4, 8):
            raise ValueError(f"requantize must be 4 or 8, not {self.requantize!r}")
        if self.backend not in (None, "ring", "jaccl", "mpi"):
            raise ValueError(f"backend must be ring, jaccl or mpi, not {self.backend!r}")
        if not 1 <= self.shards <= 64:
            raise ValueError(f"shards must be between 1 and 64, not {self.shards}")
