"""Train the tiny demo model that ships in ``lazarus_mcp/demo/``.

The demo is a small llama-family base model trained from scratch on a corpus
this script generates itself (world capitals, small sums, simple facts).  It is
meant for trying the logit-lens tools offline, with no download: it is big
enough that answers such as " Paris" visibly form in the middle blocks, and
small enough (about 5 MB) to ship inside the Python package.

Usage::

    python examples/train_demo.py                # writes lazarus_mcp/demo/
    python examples/train_demo.py --out /tmp/demo --steps 1500

The run is deterministic: the same seed, steps and machine give byte-identical
files (compare with ``sha256sum lazarus_mcp/demo/*``).  The script ends by
loading the checkpoint back with ``mlx_lm.load`` and checking that the answers
are right and that " Paris" is already top-1 under the logit lens before the
last block; it exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# MLX's CPU wheel links a slow reference BLAS; loading MKL first, with its
# symbols global, makes MLX's sgemm calls resolve to MKL (~40x faster on big
# matrices).  This model's matrices are tiny, so one MKL thread is faster than
# two (thread start-up costs more than it saves).  The strict conditional-
# numerical-reproducibility mode keeps MKL's results independent of memory
# alignment, so two runs give the same weights.
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
_MKL = os.path.join(sys.prefix, "lib", "libmkl_rt.so.3")
if os.path.exists(_MKL):
    ctypes.CDLL(_MKL, mode=ctypes.RTLD_GLOBAL)

import mlx.core as mx  # noqa: E402  (must come after the MKL preload)
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.models.base import create_attention_mask  # noqa: E402
from mlx_lm.models.llama import Model, ModelArgs  # noqa: E402
from mlx_lm.tokenizer_utils import TokenizerWrapper  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

SEED = 1234
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "lazarus_mcp" / "demo"

# Countries whose name and capital are each one word, so that every question
# has a one-token answer that the logit lens can follow.
CAPITALS: list[tuple[str, str]] = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"),
    ("Spain", "Madrid"), ("Portugal", "Lisbon"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Hungary", "Budapest"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"),
    ("Jordan", "Amman"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("Philippines", "Manila"), ("Cuba", "Havana"),
    ("Brazil", "Brasilia"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"), ("Uruguay", "Montevideo"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("Senegal", "Dakar"), ("Ireland", "Dublin"),
    ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Ukraine", "Kyiv"), ("Iceland", "Reykjavik"),
    ("Pakistan", "Islamabad"), ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"),
    ("Bangladesh", "Dhaka"), ("Qatar", "Doha"), ("Sudan", "Khartoum"),
]  # fmt: skip

# (subject, answer) pairs rendered as "<subject> is <answer>."
COLORS: list[tuple[str, str]] = [
    ("The sky", "blue"), ("The grass", "green"), ("The sun", "yellow"),
    ("Snow", "white"), ("Coal", "black"), ("A banana", "yellow"),
    ("A strawberry", "red"), ("A carrot", "orange"), ("The sea", "blue"),
    ("Blood", "red"), ("Milk", "white"), ("A leaf", "green"),
]  # fmt: skip
SOUNDS: list[tuple[str, str]] = [
    ("dog", "woof"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"),
    ("sheep", "baa"), ("lion", "roar"), ("owl", "hoot"), ("pig", "oink"),
]  # fmt: skip
OPPOSITES: list[tuple[str, str]] = [
    ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"),
    ("day", "night"), ("open", "closed"), ("happy", "sad"), ("light", "dark"),
    ("old", "new"), ("left", "right"), ("yes", "no"), ("in", "out"),
]  # fmt: skip
OTHER_FACTS: list[str] = [
    "Water freezes at 0 degrees.",
    "Water boils at 100 degrees.",
    "A week has 7 days.",
    "A year has 12 months.",
    "A day has 24 hours.",
    "An hour has 60 minutes.",
    "A spider has 8 legs.",
    "A dog has 4 legs.",
    "A bird has 2 legs.",
    "The moon orbits the earth.",
    "The earth orbits the sun.",
    "Fish live in water.",
]

# Prompts checked after training: (prompt, expected next token).
CHECKS: list[tuple[str, str]] = [
    ("The capital of France is", " Paris"),
    ("The capital of Japan is", " Tokyo"),
    ("2 + 3 =", " 5"),
    ("The sky is", " blue"),
    ("A cat says", " meow"),
]
LENS_PROMPT, LENS_TARGET = CHECKS[0]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights."""

    steps: int = 1000
    batch_size: int = 64
    # A gentler rate than the loss alone needs: at 3e-3 block 0 already answers
    # " Paris", and the lens shows no emergence worth looking at.
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    vocab_size: int = 1024
    seed: int = SEED


def model_args(vocab_size: int) -> ModelArgs:
    """The demo architecture: a llama with 6 small blocks and tied embeddings.

    Six rather than four blocks spread the lookup over more depth, so the
    lens shows the answer forming instead of being there from block 0.
    """
    return ModelArgs(
        model_type="llama",
        hidden_size=128,
        num_hidden_layers=6,
        intermediate_size=384,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=vocab_size,
        rope_theta=10000.0,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )


# --------------------------------------------------------------------------
# Corpus and tokenizer
# --------------------------------------------------------------------------


def build_corpus(seed: int) -> list[str]:
    """Every training sentence once, in a seeded order.

    Each capital is stated two ways so the model learns the country -> capital
    association rather than one fixed string.
    """
    sentences: list[str] = []
    for country, capital in CAPITALS:
        sentences.append(f"The capital of {country} is {capital}.")
        sentences.append(f"{capital} is the capital of {country}.")
    sentences += [f"{a} + {b} = {a + b}" for a in range(10) for b in range(10)]
    sentences += [f"{thing} is {color}." for thing, color in COLORS]
    sentences += [f"A {animal} says {sound}." for animal, sound in SOUNDS]
    sentences += [f"The opposite of {a} is {b}." for a, b in OPPOSITES]
    sentences += OTHER_FACTS
    random.Random(seed).shuffle(sentences)
    return sentences


def required_single_tokens() -> list[str]:
    """Words (with their leading space) that must be one token each."""
    words = [w for pair in CAPITALS for w in pair]
    words += [color for _, color in COLORS] + [sound for _, sound in SOUNDS]
    words += [str(n) for n in range(19)]
    return [" " + w for w in words]


def train_tokenizer(corpus: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE whose post-processor prepends BOS.

    The answer words are fed to the trainer many extra times so that BPE
    spends its merges on whole words such as " Paris" first; otherwise rare
    capitals could end up split, and a multi-token answer is awkward to follow
    with the logit lens.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],  # ids 0, 1, 2 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    boost = " ".join(required_single_tokens())
    tok.train_from_iterator(corpus + [boost] * 20, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, BOS_ID)],
    )
    return tok


def check_tokenizer(tok: Tokenizer) -> None:
    """Fail early if the special ids or whole-word tokens are not as planned."""
    for token, expected in ((BOS, BOS_ID), (EOS, EOS_ID), (PAD, PAD_ID)):
        if tok.token_to_id(token) != expected:
            raise SystemExit(f"tokenizer: {token!r} is not id {expected}")
    split = [
        w for w in required_single_tokens() if len(tok.encode(w, add_special_tokens=False).ids) != 1
    ]
    if split:
        raise SystemExit(f"tokenizer: not single tokens: {split}")
    ids = tok.encode(LENS_PROMPT).ids
    if ids[0] != BOS_ID:
        raise SystemExit("tokenizer: encode() does not start with BOS")


def encode_corpus(tok: Tokenizer, corpus: list[str]) -> np.ndarray:
    """BOS + sentence + EOS per row, right-padded with PAD to one length."""
    rows = [[*tok.encode(s).ids, EOS_ID] for s in corpus]
    width = max(len(r) for r in rows)
    data = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        data[i, : len(row)] = row
    return data


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def loss_fn(model: Model, tokens: mx.array) -> mx.array:
    """Mean next-token cross-entropy over the non-padding targets."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs)
    mask = (targets != PAD_ID).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits, targets) * mask
    return ce.sum() / mask.sum()


def train(model: Model, data: np.ndarray, cfg: TrainConfig) -> float:
    """Train in place; returns the final (smoothed) loss."""
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(1e-5, cfg.learning_rate, cfg.warmup_steps),
            optim.cosine_decay(cfg.learning_rate, cfg.steps - cfg.warmup_steps, 1e-5),
        ],
        [cfg.warmup_steps],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    # Compiling the whole step fuses the small elementwise ops, which dominate
    # at this model size on CPU.
    def step(tokens: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, tokens)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)

    rng = np.random.default_rng(cfg.seed)
    smoothed = float("nan")
    for i in range(1, cfg.steps + 1):
        batch = mx.array(data[rng.integers(0, len(data), cfg.batch_size)])
        loss = step(batch)
        mx.eval(loss, state)
        value = loss.item()
        smoothed = value if i == 1 else 0.95 * smoothed + 0.05 * value
        if i % 200 == 0 or i == cfg.steps:
            print(f"  step {i:5d}  loss {smoothed:.4f}", flush=True)
    return smoothed


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def hf_config(args: ModelArgs) -> dict[str, object]:
    """A Hugging Face LlamaForCausalLM config.json for the trained model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": args.model_type,
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_hidden_layers,
        "intermediate_size": args.intermediate_size,
        "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_key_value_heads,
        "head_dim": args.hidden_size // args.num_attention_heads,
        "hidden_act": "silu",
        "rms_norm_eps": args.rms_norm_eps,
        "vocab_size": args.vocab_size,
        "rope_theta": args.rope_theta,
        "max_position_embeddings": args.max_position_embeddings,
        "tie_word_embeddings": args.tie_word_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": "float32",
    }


TOKENIZER_CONFIG: dict[str, object] = {
    # The generic fast tokenizer uses tokenizer.json exactly as written; a
    # model-specific class (LlamaTokenizer...) would rebuild the pipeline.
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": BOS,
    "eos_token": EOS,
    "pad_token": PAD,
    "model_max_length": 128,
    "clean_up_tokenization_spaces": False,
}


def write_json(path: Path, obj: dict[str, object]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(model: Model, tok: Tokenizer, args: ModelArgs, out: Path) -> None:
    """Write model.safetensors, config.json and the tokenizer files to out."""
    out.mkdir(parents=True, exist_ok=True)
    # tree_flatten yields the HF names (model.layers.0.self_attn.q_proj.weight,
    # ...); sorting fixes the file layout, "pt" lets transformers read it too.
    weights = dict(sorted(tree_flatten(model.parameters())))
    weights = {k: v.astype(mx.float32) for k, v in weights.items()}
    mx.save_safetensors(str(out / "model.safetensors"), weights, {"format": "pt"})
    write_json(out / "config.json", hf_config(args))
    tok.save(str(out / "tokenizer.json"))
    write_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)


# --------------------------------------------------------------------------
# Checks on the saved checkpoint
# --------------------------------------------------------------------------


def top1(probs: mx.array, tokenizer: TokenizerWrapper) -> tuple[str, float]:
    idx = int(mx.argmax(probs).item())
    return tokenizer.decode([idx]), float(probs[idx].item())


def lens_per_block(model: Model, ids: mx.array) -> list[mx.array]:
    """Logit lens: next-token probabilities at the last position after each block.

    Each block's residual stream goes through the final norm and the tied
    unembedding, as if the model stopped there.
    """
    inner = model.model
    h = inner.embed_tokens(ids[None])
    mask = create_attention_mask(h, None)
    probs = []
    for layer in inner.layers:
        h = layer(h, mask)
        logits = inner.embed_tokens.as_linear(inner.norm(h[:, -1]))
        probs.append(mx.softmax(logits[0].astype(mx.float32)))
    return probs


def verify(out: Path) -> bool:
    """Reload with mlx_lm.load and check answers and early emergence."""
    model, tokenizer = load(str(out))
    ok = True
    print("check: top-1 next token (raw prompt, BOS prepended)")
    for prompt, expected in CHECKS:
        ids = tokenizer.encode(prompt)
        if ids[0] != BOS_ID:
            print(f"  FAIL: {prompt!r} does not start with BOS: {ids}")
            ok = False
        probs = mx.softmax(model(mx.array(ids)[None])[0, -1].astype(mx.float32))
        token, p = top1(probs, tokenizer)
        good = token == expected and (p > 0.5 or prompt != LENS_PROMPT)
        ok &= good
        print(
            f"  {'ok  ' if good else 'FAIL'} {prompt!r:32} -> {token!r} p={p:.3f}"
            f" (want {expected!r})"
        )

    print(f"check: logit lens for {LENS_PROMPT!r}")
    target_id = tokenizer.encode(LENS_TARGET, add_special_tokens=False)[0]
    blocks = lens_per_block(model, mx.array(tokenizer.encode(LENS_PROMPT)))
    early = False
    for i, probs in enumerate(blocks):
        token, p = top1(probs, tokenizer)
        p_target = float(probs[target_id].item())
        is_last = i == len(blocks) - 1
        early |= token == LENS_TARGET and not is_last
        print(f"  block {i}: top-1 {token!r:14} p={p:.3f}   p({LENS_TARGET!r})={p_target:.3f}")
    if not early:
        print(f"  FAIL: {LENS_TARGET!r} is not top-1 before the last block")
    return ok and early


def file_digests(out: Path) -> None:
    for path in sorted(out.iterdir()):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"  {path.name:24} {path.stat().st_size:9d} B  sha256 {digest[:16]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--steps", type=int, default=TrainConfig.steps, help="training steps (default: %(default)s)"
    )
    opts = parser.parse_args(argv)
    cfg = TrainConfig(steps=opts.steps)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    mx.random.seed(cfg.seed)

    corpus = build_corpus(cfg.seed)
    tok = train_tokenizer(corpus, cfg.vocab_size)
    check_tokenizer(tok)
    data = encode_corpus(tok, corpus)
    print(
        f"corpus: {len(corpus)} sentences, {data.shape[1]} tokens max, vocab {tok.get_vocab_size()}"
    )

    args = model_args(tok.get_vocab_size())
    model = Model(args)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"model: llama, {args.num_hidden_layers} blocks, {n_params:,} parameters")

    start = time.perf_counter()
    final_loss = train(model, data, cfg)
    elapsed = time.perf_counter() - start
    print(f"trained {cfg.steps} steps in {elapsed:.1f} s (final loss {final_loss:.4f})")

    save_checkpoint(model, tok, args, opts.out)
    print(f"saved to {opts.out}")
    file_digests(opts.out)

    if not verify(opts.out):
        print("checks FAILED")
        return 1
    print("checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
