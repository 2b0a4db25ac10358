"""Which blocks each rank runs, and which families the pipeline cannot split (and why).

Contiguous ranges, rank 0 first: rank 0 holds the embedding and the first blocks, the last rank
the last blocks and produces the model's own logits. Every rank holds the final norm and the
unembedding (the lens of its own blocks needs them; a tied model's is its embedding). This is
the reverse of mlx-lm's ``PipelineMixin`` order (its rank 0 holds the last layers), because
here rank 0 is also the process that tokenizes and answers. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from lazarus_mcp.errors import UnsupportedModelError

# Families whose forward cannot be cut between blocks by passing one residual stream on; each
# with the reason the refusal gives. (Filled from the family tests: tests/test_distributed*.)
UNSPLITTABLE: dict[str, str] = {}


@dataclass(frozen=True)
class Split:
    """Block ranges per rank: rank r runs blocks ``ranges[r][0]`` .. ``ranges[r][1]`` - 1."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def ranks(self) -> int:
        return len(self.ranges)

    @property
    def num_layers(self) -> int:
        return self.ranges[-1][1]

    def owner(self, layer: int) -> int:
        return next(r for r, (a, b) in enumerate(self.ranges) if a <= layer < b)

    def layers_per_rank(self) -> list[int]:
        return [b - a for a, b in self.ranges]


def even_split(num_layers: int, ranks: int) -> Split:
    """As even as possible; the first ranks take the extra blocks."""
    if ranks > num_layers:
        raise UnsupportedModelError(
            f"the model has {num_layers} blocks: it cannot be split over {ranks} ranks "
            "(each rank needs at least one)"
        )
    base, extra = divmod(num_layers, ranks)
    sizes = [base + (1 if r < extra else 0) for r in range(ranks)]
    starts = [sum(sizes[:r]) for r in range(ranks)]
    return Split(tuple((s, s + n) for s, n in zip(starts, sizes, strict=True)))


def check_splittable(family: str, support: str) -> None:
    if family in UNSPLITTABLE:
        raise UnsupportedModelError(
            f"the pipeline cannot split {family} models: {UNSPLITTABLE[family]}"
        )
    if support != "verified":
        raise UnsupportedModelError(
            f"the pipeline splits only registry families; {family} is self-checked (its head is "
            "proven by one whole forward, which no rank holds)"
        )


def holds(rank: int, split: Split, tied: bool) -> str:
    """What rank ``rank`` holds, in words (``ModelInfo.sharding``)."""
    a, b = split.ranges[rank]
    parts = [f"blocks {a}-{b - 1}", "final norm", "tied embedding" if tied else "unembedding"]
    if rank == 0 and not tied:
        parts.insert(0, "embedding")
    return ", ".join(parts)
