"""Prompts as the model sees them: the chat template (the checkpoint's code, run bounded by
``modeling.chat_template``) or the raw text with the tokenizer's special tokens."""

from __future__ import annotations

from typing import Any

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.tokens import EncodedPrompt, has_chat_template
from lazarus_mcp.modeling.chat_template import render_chat
from lazarus_mcp.runtime.limits import call_memo


def encode_prompt(tokenizer: Any, prompt: str, use_chat_template: bool) -> EncodedPrompt:
    """Tokenize as Hugging Face does: the template's text without a second BOS, or the raw prompt
    with the tokenizer's special tokens."""
    if not prompt:
        raise InvalidRequestError("the prompt is empty: give the text to analyze")
    # The gate encoded it already in this call (runtime/gate.py): the same tokenizer object,
    # alive for the whole call, gives the same tokens.
    memo = call_memo()
    key = ("encoded", id(tokenizer), prompt, use_chat_template)
    if memo is not None and key in memo:
        return memo[key]
    encoded = _encode(tokenizer, prompt, use_chat_template)
    if memo is not None:
        memo[key] = encoded
    return encoded


def _encode(tokenizer: Any, prompt: str, use_chat_template: bool) -> EncodedPrompt:
    if use_chat_template and has_chat_template(tokenizer):
        # Bounded in time, memory and output: the template is the checkpoint's code.
        text = render_chat(tokenizer, prompt)
        ids = tokenizer.encode(text, add_special_tokens=False)
        encoded = EncodedPrompt(text, list(ids), True)
    else:
        encoded = EncodedPrompt(prompt, list(tokenizer.encode(prompt)), False)
    if not encoded.token_ids:
        raise InvalidRequestError("the prompt produced no tokens")
    return encoded
