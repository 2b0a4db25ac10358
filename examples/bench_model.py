"""Make the benchmark's checkpoints: a TinyLlama-shaped llama with random bfloat16 weights, and a
4-bit MLX version of it. Also the prompts and the line protocol the benchmark's workers speak.

No hub and no torch: the weights come from a seeded numpy generator and are written straight into
a safetensors file; the tokenizer is a word-level one over 32,000 synthetic words (``w0 w1 ...``),
so a prompt of n-1 words is exactly n tokens (BOS first) for every engine.

    python examples/bench_model.py                     # ~/.cache/lazarus-bench/
    python examples/bench_model.py --out /tmp/bench

The files are the same on every run (same seed, same shapes); an existing, complete checkpoint is
reused.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

SEED = 2024
VOCAB = 32000
SPECIALS = ("<unk>", "<s>", "</s>")  # TinyLlama's ids: unk 0, bos 1, eos 2
BOS_ID, EOS_ID = 1, 2

# TinyLlama-1.1B's shape.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "vocab_size": VOCAB,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}
INIT_STD = 0.02
DONE_MARK = ".complete"


def default_dir() -> Path:
    return Path(os.environ.get("LAZARUS_BENCH_DIR", "~/.cache/lazarus-bench")).expanduser()


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the HF llama checkpoint, in file order."""
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = config["head_dim"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, q),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        }
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    return shapes


def num_params(config: dict) -> int:
    return sum(int(np.prod(shape)) for shape in tensor_shapes(config).values())


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even as every framework does."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def tensors(shapes: dict[str, tuple[int, ...]]) -> Iterator[tuple[str, np.ndarray]]:
    """Deterministic weights: norms are ones, matrices N(0, 0.02), one generator in file order."""
    rng = np.random.default_rng(SEED)
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            values = np.ones(shape, dtype=np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32)
            values *= INIT_STD
        yield name, to_bfloat16(values)


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Stream tensors into one safetensors file (the header first; memory stays one tensor)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape))
        span = [offset, offset + size]
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": span}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, data in tensors(shapes):
            f.write(data.tobytes())
    tmp.replace(path)


def word(i: int) -> str:
    return f"w{i}"


def write_tokenizer(out: Path) -> None:
    """A word-level tokenizer with VOCAB entries that transformers and mlx-lm both load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab |= {word(i): len(SPECIALS) + i for i in range(VOCAB - len(SPECIALS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(list(SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "model_max_length": CONFIG["max_position_embeddings"],
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


@functools.lru_cache
def prompt(num_tokens: int) -> str:
    """A prompt that is exactly ``num_tokens`` tokens with BOS (deterministic words)."""
    rng = np.random.default_rng(num_tokens)
    ids = rng.integers(0, VOCAB - len(SPECIALS), size=num_tokens - 1)
    return " ".join(word(int(i)) for i in ids)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(run_lens: Callable[[int], None], ready: dict) -> None:
    """A warm worker: the model is loaded; each stdin line ``N`` times one lens of an N-token
    prompt and answers ``{"n": N, "s": seconds}``; ``quit`` answers the process's peak RSS."""
    reply({"ready": True, **ready})
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        n = int(command)
        start = time.perf_counter()
        run_lens(n)
        reply({"n": n, "s": time.perf_counter() - start})
    reply({"peak_rss": peak_rss_bytes()})


def make_bf16(out: Path) -> Path:
    if (out / DONE_MARK).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2))
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
    (out / "generation_config.json").write_text(json.dumps(generation))
    write_tokenizer(out)
    write_safetensors(out / "model.safetensors", tensor_shapes(CONFIG))
    (out / DONE_MARK).touch()
    return out


def make_4bit(source: Path, out: Path) -> Path:
    """mlx-lm's own converter: 4-bit affine, group size 64 (its defaults)."""
    if (out / DONE_MARK).exists():
        return out
    import shutil

    from mlx_lm import convert

    if out.exists():
        shutil.rmtree(out)  # convert refuses an existing directory
    convert(str(source), str(out), quantize=True, q_bits=4, q_group_size=64)
    (out / DONE_MARK).touch()
    return out


def make_all(root: Path) -> tuple[Path, Path]:
    bf16 = make_bf16(root / "tinyllama-bf16")
    q4 = make_4bit(bf16, root / "tinyllama-4bit")
    return bf16, q4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_dir())
    args = parser.parse_args()
    for path in make_all(args.out.expanduser()):
        print(path)


if __name__ == "__main__":
    main()
