"""Print, per GGUF architecture and type, the worst |Δp| of lazarus's lens of a tiny GGUF file
against transformers' own loading of the same file (dequantized), over every block and every
token of the vocabulary, and whether the final top-1 agrees; then the real SmolLM2 file.

python -m examples.gguf_parity [FAMILY ...]   (from the repo root; needs torch and accelerate)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from tests.gguf_files import FAMILIES, K_QUANT, write_gguf
from tests.test_gguf import smollm2_file
from tests.test_gguf_torch import _compare
from tests.torch_families import PROMPT


def _gemma_1_rules() -> None:
    """As tests/test_gguf_torch.py: transformers' loader given Gemma 2's rules for Gemma 1."""
    from transformers import modeling_gguf_pytorch_utils as utils

    table = utils.GGUF_TO_TRANSFORMERS_MAPPING["config"]
    table["gemma"] = table["gemma2"]
    utils.GGUF_SUPPORTED_ARCHITECTURES.append("gemma")
    utils.TENSOR_PROCESSORS["gemma"] = utils.Gemma2TensorProcessor


def main() -> None:
    _gemma_1_rules()
    families = sys.argv[1:] or list(FAMILIES)
    print(f"{'architecture':<14}" + "".join(f"{q:>12}" for q in ("F32", "Q8_0", "Q4_0", "K")))
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            cells = []
            for qtype in ("F32", "Q8_0", "Q4_0", K_QUANT[family]):
                path = write_gguf(Path(tmp) / f"{family}-{qtype}", family, qtype)
                try:
                    cells.append(f"{_compare(path, PROMPT):.1e}")
                except (AssertionError, pytest.fail.Exception) as exc:
                    cells.append("FAIL " + str(exc)[:20])
            k = f" ({K_QUANT[family]})"
            print(f"{family:<14}" + "".join(f"{c:>12}" for c in cells) + k)
    path = smollm2_file()
    if path is not None:
        print(f"SmolLM2-135M Q4_1: {_compare(path, 'The capital of France is'):.1e}")


if __name__ == "__main__":
    main()
