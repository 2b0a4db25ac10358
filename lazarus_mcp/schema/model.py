"""What lazarus knows about a loaded model, as every interface reports it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class QuantizationInfo(BaseModel):
    bits: int
    group_size: int
    mode: str = "affine"


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
    dtype: str = Field(description="The dtype of the checkpoint's weights as stored.")
    compute_dtype: str = Field(
        description="The dtype of the activations (the residual stream) here."
    )
    weight_dtype: str = Field(description="The dtype of the weights the linear layers read here.")
    matmul: str = Field(
        description="What computes the linear layers here: 'mlx' (MLX's own matmul; on the CPU "
        "float32 through BLAS), or lazarus's AVX512-BF16 CPU kernel on the stored bfloat16 "
        "weights with float32 sums: 'lazarus-bf16x2' (inputs split into two bfloat16 parts, "
        "float32-accurate) or 'lazarus-bf16' (inputs rounded to bfloat16, as a bfloat16 model)."
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
