"""One rank's share of a checkpoint: the model's own lazily built object, with what this rank
does not run dropped before a single weight is read.

mlx-lm builds the whole model lazily (its weights are unread file references until evaluated);
``modeling.loading.load`` calls :func:`keep_stage` before converting anything, which replaces
the blocks of other ranks by :class:`NotHere` placeholders (no parameters) and, on ranks other
than 0 of an untied model, the embedding by :class:`NoEmbedding`. The dropped weights are never
read, so a rank's resident weights are its blocks, the final norm and the unembedding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.distributed.split import Split, check_splittable, even_split
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot, unembedding_module
from lazarus_mcp.modeling.checkpoint import read_config, resolve_model_path
from lazarus_mcp.modeling.families import FamilySpec
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.modeling.weights import WeightsSummary, summarize
from lazarus_mcp.runtime.limits import check_memory

_PLAIN = (bool, int, float, str, type(None))
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


class NotHere(nn.Module):
    """A block another rank runs: no weights, only the plain attributes the model's loop may
    read (``use_sliding``, ``layer_idx``, EXAONE 4's ``self_attn.is_local``), its submodules'
    included; calling it is a bug."""

    def __init__(self, block: Any) -> None:
        super().__init__()
        for key, value in vars(block).items():
            if not key.startswith("_") and isinstance(value, _PLAIN):
                object.__setattr__(self, key, value)
        for key, child in block.children().items():
            if isinstance(child, nn.Module):
                setattr(self, key, NotHere(child))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a block of another pipeline stage was called on this one")


class NoEmbedding(nn.Module):
    """Rank > 0 of an untied model: the embedding's shape without its table (the stream it
    would start is replaced by the one received from the previous rank)."""

    stands_for_token_embedding = True  # found where the embedding is looked up (lens/head.py)

    def __init__(self, dims: int) -> None:
        super().__init__()
        self._dims = dims
        self._dtype: Any = mx.float32

    def set_output_dtype(self, dtype: Any) -> None:
        self._dtype = dtype

    def __call__(self, ids: mx.array) -> mx.array:
        return mx.zeros((*ids.shape, self._dims), dtype=self._dtype)


class KeepStage:
    """The ``keep`` hook of ``loading.load`` for rank ``rank`` of ``ranks``; the split it
    chose from the built model's block count is kept in ``split``."""

    def __init__(self, rank: int, ranks: int, path: Path) -> None:
        self.rank = rank
        self.ranks = ranks
        self.path = path
        self.split: Split | None = None

    def __call__(self, model: Any, spec: FamilySpec | None) -> None:
        family = str(getattr(model, "model_type", None) or "this family")
        if spec is None:
            check_splittable(family, "self-checked")
        layers = block_list(model)
        self.split = even_split(len(layers), self.ranks)
        a, b = self.split.ranges[self.rank]
        check_memory("loading this rank's share of the model", share_bytes(self.path, a, b))
        for i in range(len(layers)):
            if not a <= i < b:
                layers[i] = NotHere(layers[i])
        if self.rank > 0 and unembedding_module(model) is not None:
            holder, key = embedding_slot(model)
            holder[key] = NoEmbedding(int(holder[key].weight.shape[-1]))


def share_bytes(path: Path, first: int, end: int) -> int:
    """Bytes of the weights a rank running blocks ``first`` .. ``end`` - 1 loads (as the whole
    model's budget check counts them: float32 on the CPU), from the safetensors headers."""
    summary = summarize(path)
    kept = {
        name: shape
        for name, shape in summary.shapes.items()
        if (m := _BLOCK.search(name)) is None or first <= int(m.group(1)) < end
    }
    share = WeightsSummary(kept, summary.dtypes, summary.stored_bytes, summary.num_layers)
    config = read_config(path)
    quant = config.get("quantization") or config.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    return share.loaded_bytes(bits if isinstance(bits, int) and 0 < bits <= 32 else None)


def load_stage(
    model_id: str, options: LoadOptions, rank: int, ranks: int
) -> tuple[LoadedModel, Split]:
    """This rank's share of the model, its weights read and resident, and the split."""
    keep = KeepStage(rank, ranks, resolve_model_path(model_id))
    loaded = load(model_id, options, keep=keep)
    check_splittable(loaded.info.family, loaded.info.support)
    holder, key = embedding_slot(loaded.model)
    if isinstance(holder[key], NoEmbedding):
        holder[key].set_output_dtype(getattr(mx, loaded.info.compute_dtype))
    with loaded.scope():
        mx.eval(loaded.model.parameters())
    assert keep.split is not None
    return loaded, keep.split
