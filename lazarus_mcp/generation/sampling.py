"""Choosing the next token: greedy, or sampled with a temperature and top-p from a seeded key.

Reproducible run to run: the sampler owns an explicit ``mx.random`` key made from the seed and
splits it once per step, so it never reads or advances MLX's global random state (which model
loads draw from) and the same seed, prompt and settings give the same tokens in any process.
Sampling is a Gumbel-max draw (``mx.random.categorical``) over the temperature-scaled logits,
restricted to the nucleus: the most likely tokens whose probabilities, summed best first, reach
``top_p`` (the token that crosses it included, so the nucleus is never empty).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import mlx.core as mx


def fresh_seed() -> int:
    """A seed for a caller who gave none; it is recorded in the result."""
    return secrets.randbits(63)


def nucleus_logits(logits: mx.array, top_p: float) -> mx.array:
    """``logits`` [V] with every token outside the top-p nucleus set to -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits = -mx.sort(-logits)
    probs = mx.softmax(sorted_logits)
    before = mx.cumsum(probs) - probs  # mass of the strictly better tokens
    count = mx.sum(before < top_p)  # >= 1: the best token has nothing before it
    cutoff = mx.take(sorted_logits, count - 1)
    return mx.where(logits >= cutoff, logits, -mx.inf)


@dataclass
class Sampler:
    """Temperature 0: the argmax (ties to the lowest id). Otherwise one seeded draw per step."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    _key: mx.array | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._key = mx.random.key(self.seed)

    def choose(self, logits: mx.array) -> mx.array:
        """The next token id (a scalar int32 array, unevaluated) from the model's logits [V]."""
        logits = logits.astype(mx.float32)
        if self.temperature == 0.0:
            return mx.argmax(logits).astype(mx.int32)
        assert self._key is not None
        self._key, draw = mx.random.split(self._key)
        scaled = nucleus_logits(logits / self.temperature, self.top_p)
        return mx.random.categorical(scaled, key=draw).astype(mx.int32)
