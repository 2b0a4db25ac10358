"""Comparing a result with a PyTorch reference case (shared/parity/refs/*.json)."""

from __future__ import annotations

from typing import Any

import numpy as np

PROB_TOL = 2e-3


def assert_matches_reference(result: dict[str, Any], case: dict[str, Any]) -> float:
    """Same input ids and tokens; per layer the same top-k ids (ties aside) and probabilities
    within PROB_TOL. Returns the worst probability difference seen."""
    assert result["token_ids"] == case["input_ids"]
    assert result["tokens"] == case["tokens"]
    ref_layers = {layer["layer_idx"]: layer for layer in case["layers"]}
    worst = 0.0
    for layer in result["layer_predictions"]:
        ref_probs = np.exp(np.asarray(ref_layers[layer["layer_idx"]]["logprobs"], dtype=np.float64))
        ours = {t["token_id"]: t["probability"] for t in layer["top_k"]}
        k = len(ours)
        ref_order = np.argsort(-ref_probs, kind="stable")
        # The k-th reference probability: tokens above it must be ours, ties around it may differ.
        kth = ref_probs[ref_order[k - 1]]
        for token_id in ref_order[:k]:
            if ref_probs[token_id] > kth + PROB_TOL:
                assert token_id in ours, (layer["layer_idx"], int(token_id))
        for token_id, prob in ours.items():
            diff = abs(prob - ref_probs[token_id])
            worst = max(worst, diff)
            assert diff <= PROB_TOL, (layer["layer_idx"], token_id, prob, ref_probs[token_id])
            assert ref_probs[token_id] >= kth - PROB_TOL
        assert layer["top_token_id"] == layer["top_k"][0]["token_id"]
    return worst
