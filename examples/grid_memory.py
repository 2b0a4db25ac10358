"""The grid's peak memory at a large vocabulary: measured, next to what chunking promises.

    python examples/grid_memory.py                      # vocab 262,144, 1,000 positions
    python examples/grid_memory.py --vocab 32000 --positions 500

Builds (in a temporary directory) a llama-shaped checkpoint with random float32 weights: the
bundled demo model's tokenizer, hidden 64, ``--layers`` blocks, and an embedding (tied head) of
``--vocab`` rows, so the head's [positions, vocab] work is as large as Gemma 3's while the blocks
cost nothing. Then runs the whole grid (every position, every block, the embedding row, one
tracked token) and prints MLX's peak memory for the analysis alone, the model's own
[positions, vocab] logits, numpy's peak (the cells' statistics), the growth of the process's
peak RSS, and the size one [rows, positions, vocab] float32 array would have.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

from lazarus_mcp.runtime.process import prepare_process

MB = 1e6


def build(out: Path, vocab: int, layers: int) -> Path:
    from safetensors.numpy import save_file

    from lazarus_mcp.modeling.checkpoint import demo_path

    demo = demo_path()
    config = json.loads((demo / "config.json").read_text())
    hidden, inter, heads, kv, head_dim = 64, 128, 4, 2, 16
    config |= {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
    }
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": w(vocab, hidden),
        "model.norm.weight": np.ones(hidden, np.float32),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(inter, hidden),
            p + "mlp.up_proj.weight": w(inter, hidden),
            p + "mlp.down_proj.weight": w(hidden, inter),
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(out / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo / name, out / name)
    return out


def measure(path: Path, positions: int) -> dict[str, float]:
    import mlx.core as mx

    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.runtime import worker
    from lazarus_mcp.schema import AnalysisConfig, LayerStrategy

    loaded = worker.run_sync(load, str(path))
    words = ("The capital of France is Paris . " * positions).split()
    text = " ".join(words)
    ids = loaded.tokenizer.encode(text)[:positions]
    prompt = loaded.tokenizer.decode(ids[1:])  # BOS is added again
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        positions="all",
        include_embeddings=True,
        track_tokens=[" Paris"],
        use_chat_template=False,
    )

    def run() -> dict[str, float]:
        mx.clear_cache()
        before = mx.get_active_memory()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        mx.reset_peak_memory()
        tracemalloc.start()  # numpy reports its buffers to tracemalloc
        result = analyze_loaded(loaded, prompt, config)
        _, numpy_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak = mx.get_peak_memory()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert result.grid is not None
        return {
            "positions": len(result.grid),
            "rows": len(result.layer_predictions),
            "peak_over_weights": (peak - before) / MB,
            "numpy_peak": numpy_peak / MB,
            "rss_growth": (rss_after - rss_before) / MB,
        }

    got = worker.run_sync(run)
    vocab = loaded.info.vocab_size
    got["model_logits"] = got["positions"] * vocab * 4 / MB
    got["one_full_array"] = got["rows"] * got["positions"] * vocab * 4 / MB
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=262144)
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    prepare_process()
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "wide", args.vocab, args.layers)
        got = measure(path, args.positions)
    print(
        f"vocab {args.vocab:,}, {got['rows']} rows (embedding + {args.layers} blocks), "
        f"{got['positions']} positions:\n"
        f"  MLX peak during the analysis (above the weights): {got['peak_over_weights']:,.0f} MB\n"
        f"  of which the model's own logits [P, V] float32:   {got['model_logits']:,.0f} MB\n"
        f"  Python + numpy peak (tracemalloc):                 {got['numpy_peak']:,.0f} MB\n"
        f"  growth of the process's peak RSS:                  {got['rss_growth']:,.0f} MB\n"
        f"  one [rows, P, V] float32 array, for comparison:     {got['one_full_array']:,.0f} MB"
    )


if __name__ == "__main__":
    main()
