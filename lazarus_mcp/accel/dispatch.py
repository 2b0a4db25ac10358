"""Which kernel computes a float32-accurate matmul on bfloat16 weights, by its shape.

Every linear layer of a bfloat16 checkpoint under ``--dtype auto`` (the model's own layers and
the lens head, which is the model's unembedding) keeps only the packed bfloat16 weights, and
multiplies float32 inputs by them in one of two ways, both float32-accurate:

- ``SPLIT`` (``csrc/_bf16_gemm.c``, parts = 2): the input split into two bfloat16 parts and
  multiplied with the CPU's bfloat16 dot products (VDPBF16PS);
- ``WIDENED`` (``csrc/_widen_gemm.c``): float32 FMAs on the weights widened to float32 in
  registers as they are read.

Both read the stored bfloat16 bytes once, so at a few rows (the weights streamed from memory)
they take the same time; what differs is the arithmetic at many rows. The split computes twice
the products at the bfloat16 rate: equal to the float32 FMA rate where VDPBF16PS runs on both
FMA pipes (AMD Zen 4, this project's machine: measured equal within the noise at 1-704 rows),
half of it where it runs on one port (Intel Sapphire Rapids; there the split was ~2.4x slower
than MKL's sgemm at hundreds of rows). The widened kernel computes at the float32 FMA rate
everywhere, with the input in full float32 (twice as accurate as the split's 16 bits: max error
6-9e-6 against 1.2-1.4e-5 on [37, 2048] x [2048, n] products of magnitude 4).

MKL's float32 sgemm would need float32 weights: kept, they double the model's memory; converted
per call (``astype``, then sgemm), the conversion alone cost more than the widened kernel's whole
multiplication at every shape measured (MLX's CPU cast is a scalar loop). Nor would widening a
panel at a time and streaming it through sgemm help: MKL alone, on float32 weights made
beforehand, ran at 50-89 GFLOP per CPU-second on the lens's shapes against the widened kernel's
94-105 and the core's FMA peak of 108-116 (``examples/bench_gemm.py``, Zen 4). So MKL serves
the float32 path only (float32 checkpoints, CPUs without AVX-512).

Few rows keep the split so that a short prompt computes exactly what it computed before this
dispatch (its results unchanged bit for bit); from ``WIDE_ROWS`` rows on (a 32-token prompt, a
grid's head projection, a batch) the widened kernel runs. Results differ between the two by
float32 rounding (relative ~1e-6), well inside the lens's 1e-5 checks.
"""

from __future__ import annotations

SPLIT = "split"
WIDENED = "widened"
WIDE_ROWS = 32


def exact_kernel(rows: int) -> str:
    """The kernel for a float32-accurate matmul of ``rows`` input rows."""
    return SPLIT if rows < WIDE_ROWS else WIDENED
