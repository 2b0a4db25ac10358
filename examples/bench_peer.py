"""The peer: the logit lens as a PyTorch + transformers user writes it.

One forward pass with ``output_hidden_states=True`` (and ``logits_to_keep=1``, so the model's own
head runs on the last position only), then the final norm and ``lm_head`` on the last position
of every block's hidden state, and the same statistics lazarus reports (top-k, entropy,
KL(final || layer)).

    python examples/bench_peer.py MODEL_DIR --dtype bfloat16 --tokens 8    # cold: one lens
    python examples/bench_peer.py MODEL_DIR --dtype float32 --serve           # warm worker

Without ``--serve`` the script is the "cold" run the benchmark times as a whole process: imports,
load, one lens, print. With it, the model stays loaded and stdin lines ask for timed lenses (the
protocol in ``bench_model.serve``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path: str, dtype: str) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.eval()
    return model, tokenizer


@torch.inference_mode()
def lens(model: Any, input_ids: torch.Tensor, top_k: int = 5) -> dict[str, torch.Tensor]:
    """The lens of every block at the last position: blocks 0..N-2 through norm + lm_head, block
    N-1 is the model's own output."""
    out = model(input_ids, output_hidden_states=True, logits_to_keep=1)
    # hidden_states[0] is the embedding output, [i + 1] block i's output (the last one normed).
    blocks = torch.stack([h[0, -1] for h in out.hidden_states[1:-1]])
    logits = model.lm_head(model.model.norm(blocks))
    logits = torch.cat([logits, out.logits[:, -1]]).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    final = logprobs[-1:]
    top = torch.topk(logprobs, top_k, dim=-1)
    return {
        "top_ids": top.indices,
        "top_probs": top.values.exp(),
        "entropy": -(logprobs.exp() * logprobs).sum(-1),
        "kl": (final.exp() * (final - logprobs)).sum(-1),
    }


def encode(tokenizer: Any, prompt: str) -> torch.Tensor:
    return torch.tensor([tokenizer.encode(prompt)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--tokens", type=int, default=8, help="cold run: prompt length")
    parser.add_argument("--serve", action="store_true", help="warm worker (see bench_model.serve)")
    args = parser.parse_args()

    from bench_model import prompt, serve

    start = time.perf_counter()
    model, tokenizer = load(args.model, args.dtype)
    load_s = time.perf_counter() - start
    if args.serve:

        def run_lens(n: int) -> None:
            ids = encode(tokenizer, prompt(n))
            assert ids.shape[1] == n, f"the prompt is {ids.shape[1]} tokens, not {n}"
            lens(model, ids)

        serve(run_lens, {"load_s": load_s, "threads": torch.get_num_threads()})
        return
    result = lens(model, encode(tokenizer, prompt(args.tokens)))
    for layer, ids in enumerate(result["top_ids"].tolist()):
        top = tokenizer.convert_ids_to_tokens(ids[0])
        print(layer, top, f"{result['top_probs'][layer, 0]:.4f}")


if __name__ == "__main__":
    main()
