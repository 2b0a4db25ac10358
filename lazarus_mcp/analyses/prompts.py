"""Prompts as the model sees them: the chat template (the checkpoint's code, run bounded by
``modeling.chat_template``) or the raw text with the tokenizer's special tokens."""

from __future__ import annotations

from typing import Any

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.tokens import EncodedPrompt, has_chat_template
from lazarus_mcp.modeling.chat_template import render_chat


def encode_prompt(tokenizer: Any, prompt: str, use_chat_template: bool) -> EncodedPrompt:
    """Tokenize as Hugging Face does: the template's text without a second BOS, or the raw prompt
    with the tokenizer's special tokens."""
    if not prompt:
        raise InvalidRequestError("the prompt is empty: give the text to analyze")
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
