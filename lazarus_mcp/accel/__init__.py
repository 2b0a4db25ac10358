"""CPU acceleration: the optimized BLAS behind MLX's float32 matmuls, lazarus's bfloat16 and
affine-quantized GEMMs (C sources in ``csrc/``), and diagnostics of what computes."""
