"""Multi-token answers: the teacher-forced sequence log-probability from one forward pass equals
the sum of the pieces' single-position lens log-probabilities, each from its own forward pass."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.taps import forward_with_taps
from tests.conftest import PARITY

pytestmark = pytest.mark.anyio


def _separately(loaded: object, prompt_ids: list[int], pieces: list[int]) -> np.ndarray:
    """[L + 1]: per block (the last from the model's output) and final, summed over pieces."""
    model, head = loaded.model, loaded.head  # type: ignore[attr-defined]
    n = len(model.model.layers)
    total = np.zeros(n + 1)
    for j, piece in enumerate(pieces):
        ids = prompt_ids + pieces[:j]
        captured, own = forward_with_taps(
            model,
            ids,
            list(range(n)),
            loaded.embedding_factor(None),
            loaded.sliding_windows,  # type: ignore[attr-defined]
        )
        rows = mx.concatenate([head(mx.stack([captured[i] for i in range(n - 1)])), own[None]])
        logprobs, _ = stats.softmax_pair(np.array(mx.concatenate([rows, own[None]])))
        total += logprobs[:, piece].astype(np.float64)
    return total


@pytest.mark.parametrize("name", ["llama", "gemma3-text"])
async def test_sequence_logprob_equals_the_pieces_scored_separately(name: str) -> None:
    queries = [" Größe", "France!?", " is"]  # two strings of several tokens, one token
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL, use_chat_template=False, track_tokens=queries
    )
    prompt = "The capital of France is"
    async with ModelAnalyzer.from_pretrained(str(PARITY / name)) as analyzer:
        result = await analyzer.analyze(prompt, config)
        plain = await analyzer.analyze(prompt, config.model_copy(update={"track_tokens": []}))
        loaded = analyzer.loaded
        tokenizer = loaded.tokenizer
        multi = [e for e in result.token_evolutions if e.multi_token]
        assert len(multi) >= 2, [e.pieces for e in result.token_evolutions]
        for evo in result.token_evolutions:
            if not evo.multi_token:
                assert evo.final_sequence_logprob is None
                assert all(s.sequence_logprob is None for s in evo.layers)
                continue
            pieces = tokenizer.encode(evo.query, add_special_tokens=False)
            expected = _separately(loaded, result.token_ids, pieces)
            got = [s.sequence_logprob for s in evo.layers] + [evo.final_sequence_logprob]
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, atol=1e-4)
    # Scoring continuations in the same pass leaves the prompt's own lens as it was.
    for ours, alone in zip(result.layer_predictions, plain.layer_predictions, strict=True):
        assert ours.top_token_id == alone.top_token_id
        assert ours.top_probability == pytest.approx(alone.top_probability, abs=1e-5)
