"""What lazarus knows about a loaded model, as every interface reports it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class QuantizationInfo(BaseModel):
    bits: int
    group_size: int
    mode: str = "affine"


class RequantizationInfo(BaseModel):
    """What ``requantize`` did: the dequantized (K-quant) layers made MLX affine, and the lens's
    change it caused, measured at load on a probe prompt, every block."""

    bits: int
    group_size: int
    probe_tokens: int
    max_abs_prob_diff: float = Field(
        description="Largest |p_requantized - p_dequantized| over every block's lens and the "
        "whole vocabulary, at the probe's last position."
    )
    top1_agreement: float = Field(description="Share of blocks whose lens top-1 is unchanged.")
    final_top1_agrees: bool = Field(description="The last block's (the model's) top-1 unchanged.")


class ShardingInfo(BaseModel):
    """How a model's blocks are split over the ranks of a shard group (``--shards``)."""

    ranks: int = Field(description="Processes holding the model; rank 0 answers.")
    layers_per_rank: list[int] = Field(description="Blocks each rank runs, rank 0 first.")
    layer_ranges: list[list[int]] = Field(description="[first, last] block of each rank.")
    holds: list[str] = Field(description="What each rank holds, in words.")
    weight_bytes_per_rank: list[int] = Field(description="Bytes of each rank's loaded weights.")
    resident_bytes_per_rank: list[int] = Field(
        description="Resident memory each rank's load added (measured RSS; a process's first "
        "load also counts one-time allocations of MLX and the tokenizer)."
    )
    backend: str = Field(description="mx.distributed backend: ring, jaccl or mpi.")
    hosts: list[str] = Field(description="Each rank's host.")


class ModelInfo(BaseModel):
    """What the lens needs to know about a model, read from its config and weights."""

    model_id: str = Field(description="The id or path the model was requested by.")
    path: str = Field(description="The local directory the checkpoint was read from.")
    family: str = Field(description="The config's model_type, e.g. llama, gemma2, qwen3.")
    num_layers: int = Field(description="Transformer blocks; lens layers are numbered 0..N-1.")
    hidden_size: int
    vocab_size: int = Field(description="Rows of the unembedding (ranks are over all of them).")
    tied_embeddings: bool = Field(description="The unembedding is the input embedding matrix.")
    embedding_scale: float | None = Field(
        None, description="Factor the model applies to its embeddings (Gemma: sqrt(hidden))."
    )
    final_logit_softcap: float | None = Field(
        None, description="c in logits = c * tanh(logits / c), applied to every layer's lens."
    )
    quantization: QuantizationInfo | None = None
    format: Literal["safetensors", "gguf"] = Field(
        "safetensors",
        description="The checkpoint's file format: a model directory of "
        "safetensors, or one GGUF file (llama.cpp, Ollama, LM Studio).",
    )
    file_type: str | None = Field(
        None,
        description="GGUF only: what the file calls its quantization (e.g. Q4_K_M, Q8_0).",
        exclude_if=lambda v: v is None,
    )
    requantization: RequantizationInfo | None = Field(
        None,
        description="GGUF with requantize: the dequantized layers made MLX affine, and how much "
        "that moved the lens (measured at load).",
        exclude_if=lambda v: v is None,
    )
    tensor_types: dict[str, int] | None = Field(
        None,
        description="GGUF only: how many tensors the file stores in each type (e.g. "
        "{'Q4_K': 96, 'Q6_K': 17, 'F32': 49}); Q4_0, Q4_1 and Q8_0 stay quantized, other "
        "quantized types are dequantized at load.",
        exclude_if=lambda v: v is None,
    )
    dtype: str = Field(description="The dtype of the checkpoint's weights as stored.")
    compute_dtype: str = Field(
        description="The dtype of the activations (the residual stream) here."
    )
    weight_dtype: str = Field(description="The dtype of the weights the linear layers read here.")
    matmul: str = Field(
        description="What computes the linear layers here: 'mlx' (MLX's own matmul; on the CPU "
        "float32 through BLAS), or lazarus's AVX512-BF16 CPU kernel on the stored bfloat16 "
        "weights with float32 sums: 'lazarus-bf16x2' (float32-accurate: for a few rows the "
        "inputs split into two bfloat16 parts, for 32 rows or more float32 arithmetic on the "
        "weights widened as they are read) or 'lazarus-bf16' (inputs rounded to bfloat16, as a "
        "bfloat16 model)."
    )
    device: str = Field(description="The MLX device the model runs on (cpu or gpu).")
    has_chat_template: bool
    support: Literal["verified", "self-checked"] = Field(
        "verified",
        description="'verified': a registry family, its lens checked against transformers at "
        "every block; 'self-checked': an architecture outside the registry whose head is the "
        "model's own code, proven at load (lens of the last block == its own logits).",
    )
    corrections: list[str] = Field(
        default_factory=list,
        description="Where the MLX port departs from the reference architecture and was corrected.",
    )
    sharding: ShardingInfo | None = Field(
        None, description="Set when the model is split over several processes (--shards)."
    )
