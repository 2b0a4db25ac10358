"""Print the worst probability difference against the PyTorch references, per parity model;
with --bfloat16, also how far lazarus's CPU kernels move the lens of bfloat16 copies of them.

python examples/parity_report.py [--bfloat16] [PATH_TO_shared/parity]

The bfloat16 table compares, on every case, layer and top-10 token, the lens of each kernel
mode (``--dtype auto``: lazarus-bf16x2; ``--dtype bfloat16``: lazarus-bf16) with the float32
lens of the same bfloat16 weights (``--dtype float32``, the path the references verify).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import anyio
import numpy as np

from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer


def worst_difference(result: dict, layers: list[dict]) -> float:
    refs = {layer["layer_idx"]: np.exp(np.asarray(layer["logprobs"])) for layer in layers}
    return max(
        abs(t["probability"] - refs[layer["layer_idx"]][t["token_id"]])
        for layer in result["layer_predictions"]
        for t in layer["top_k"]
    )


def config(case: dict) -> AnalysisConfig:
    return AnalysisConfig(
        layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not case["raw"]
    )


async def against_references(parity: Path) -> None:
    for refs in sorted((parity / "refs").glob("*.json")):
        ref = json.loads(refs.read_text())
        worst = 0.0
        async with ModelAnalyzer.from_pretrained(str(parity / refs.stem)) as analyzer:
            for case in ref["cases"]:
                result = await analyzer.analyze(case["prompt"], config(case))
                assert result.token_ids == case["input_ids"], refs.stem
                data = result.model_dump(mode="json")
                worst = max(worst, worst_difference(data, case["layers"]))
        print(f"{refs.stem:12s} {ref['model_type']:12s} worst |p - p_ref| = {worst:.1e}")


def bfloat16_copy(source: Path, directory: Path) -> Path:
    import mlx.core as mx

    path = Path(shutil.copytree(source, directory / source.name))
    weights = mx.load(str(path / "model.safetensors"))
    bf16 = {name: value.astype(mx.bfloat16) for name, value in weights.items()}
    mx.save_safetensors(str(path / "model.safetensors"), bf16)
    return path


def float32_layers(analyzer: ModelAnalyzer, token_ids: list[int]) -> list[dict]:
    """Every block's full log-distribution through the float32 path (lazarus's internals)."""
    import mlx.core as mx

    from lazarus_mcp.lens.taps import forward_with_taps

    loaded = analyzer.loaded
    blocks = list(range(loaded.info.num_layers))
    captured, _ = forward_with_taps(loaded.model, token_ids, blocks)
    logits = loaded.head(mx.stack([captured[i] for i in blocks]))
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    return [{"layer_idx": i, "logprobs": logprobs[i]} for i in blocks]


async def kernel_modes(parity: Path) -> None:
    from lazarus_mcp.runtime import worker

    print(f"\n{'bfloat16 copy':14s} {'auto':>22s} {'--dtype bfloat16':>22s}")
    with tempfile.TemporaryDirectory() as tmp:
        for refs in sorted((parity / "refs").glob("*.json")):
            cases = json.loads(refs.read_text())["cases"]
            path = await worker.run(bfloat16_copy, parity / refs.stem, Path(tmp))
            async with ModelAnalyzer.from_pretrained(str(path), dtype="float32") as exact:
                cells = []
                for dtype in ("auto", "bfloat16"):
                    async with ModelAnalyzer.from_pretrained(str(path), dtype=dtype) as kernel:
                        worst = 0.0
                        for case in cases:
                            result = await kernel.analyze(case["prompt"], config(case))
                            layers = await worker.run(float32_layers, exact, result.token_ids)
                            data = result.model_dump(mode="json")
                            worst = max(worst, worst_difference(data, layers))
                        cells.append(f"{kernel.info.matmul} {worst:.1e}")
            print(f"{refs.stem:14s} {cells[0]:>22s} {cells[1]:>22s}")


async def main(args: argparse.Namespace) -> None:
    await against_references(args.parity)
    if args.bfloat16:
        await kernel_modes(args.parity)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "parity"
    parser.add_argument("parity", nargs="?", type=Path, default=default)
    parser.add_argument("--bfloat16", action="store_true", help="also the CPU kernels' table")
    anyio.run(main, parser.parse_args())
