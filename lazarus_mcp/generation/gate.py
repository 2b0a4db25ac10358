"""What a generation may cost, refused before any work: tokens, the result's size, memory.

A generation's result grows as max_new_tokens x (captured layers + 1) x (top_k + tracked
tokens + 2) entries (each step lists every captured block's top-k, the tracked tokens and the
emitted token there, and the model's own top-k). ``MAX_RESULT_ENTRIES`` keeps the JSON under
about 20 MB (some 60 bytes an entry): the default request (32 tokens, 9 of SmolLM2's 30 blocks,
top-5) is 2,880 entries; 4,096 tokens at every block of a 30-block model with top_k at the
vocabulary would be 6e9, and is refused up front, as is a prompt plus max_new_tokens beyond
the model's context or the server's prompt limit. The KV cache and the last step's forward
are estimated as a forward pass over the whole sequence (``guards.forward_bytes``), an upper
bound: a step attends one query to the cached keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazarus_mcp.lens.guards import _arg, forward_bytes
from lazarus_mcp.runtime import limits
from lazarus_mcp.runtime.limits import LimitExceededError

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel
    from lazarus_mcp.schema.generation import GenerationConfig

MAX_RESULT_ENTRIES = 300_000


def result_entries(config: GenerationConfig, num_layers: int) -> int:
    per_row = config.top_k + len(config.track_tokens) + 2
    return config.max_new_tokens * (num_layers + 1) * per_row


def check_generation(config: GenerationConfig, num_layers: int) -> None:
    """Before anything is loaded or encoded: the result's size from the request alone."""
    limits.check_tracked(config.track_tokens)
    limits.check_layers_listed(config.custom_layers)
    limits.check_float_arg("embedding_scale", config.embedding_scale)
    entries = result_entries(config, num_layers)
    if entries > MAX_RESULT_ENTRIES:
        raise LimitExceededError(
            f"this generation would list {entries:,} entries ({config.max_new_tokens} tokens x "
            f"{num_layers} layers + the output x (top_k {config.top_k} + "
            f"{len(config.track_tokens)} tracked + 2)), more than the limit of "
            f"{MAX_RESULT_ENTRIES:,}: ask for fewer tokens, fewer layers or a smaller top_k"
        )


def check_sequence(loaded: LoadedModel, prompt_tokens: int, config: GenerationConfig) -> None:
    """After encoding, before the first forward: the whole sequence against the model's
    context and the server's limits, and its estimated memory."""
    context = _arg(loaded.model, "max_position_embeddings")
    limits.check_prompt_tokens(prompt_tokens, context)
    total = prompt_tokens + config.max_new_tokens
    lim = limits.current()
    bounds = [b for b in (context, lim.max_prompt_tokens) if b is not None]
    if bounds and total > min(bounds):
        bound = min(bounds)
        which = (
            "the model's context (max_position_embeddings)"
            if bound == context
            else "this server's limit (--max-prompt-tokens)"
        )
        raise LimitExceededError(
            f"the prompt ({prompt_tokens:,} tokens) plus max_new_tokens "
            f"({config.max_new_tokens:,}) is {total:,} tokens, more than {which} of {bound:,}; "
            "ask for fewer tokens or shorten the prompt"
        )
    limits.check_memory(
        "this generation", forward_bytes(loaded, total, loaded.info.num_layers)
    )
