"""Print the worst probability difference against the PyTorch references, per parity model.

python examples/parity_report.py [PATH_TO_shared/parity]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import numpy as np

from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer


def worst_difference(result: dict, case: dict) -> float:
    refs = {layer["layer_idx"]: np.exp(np.asarray(layer["logprobs"])) for layer in case["layers"]}
    return max(
        abs(t["probability"] - refs[layer["layer_idx"]][t["token_id"]])
        for layer in result["layer_predictions"]
        for t in layer["top_k"]
    )


async def main(parity: Path) -> None:
    for refs in sorted((parity / "refs").glob("*.json")):
        ref = json.loads(refs.read_text())
        worst = 0.0
        async with ModelAnalyzer.from_pretrained(str(parity / refs.stem)) as analyzer:
            for case in ref["cases"]:
                config = AnalysisConfig(
                    layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not case["raw"]
                )
                result = await analyzer.analyze(case["prompt"], config)
                assert result.token_ids == case["input_ids"], refs.stem
                worst = max(worst, worst_difference(result.model_dump(mode="json"), case))
        print(f"{refs.stem:12s} {ref['model_type']:12s} worst |p - p_ref| = {worst:.1e}")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "parity"
    anyio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else default)
