"""Token display, prompt encoding and tracked-token resolution on real tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.errors import InvalidRequestError, TokenResolutionError
from lazarus_mcp.lens.tokens import TokenText
from tests.conftest import PARITY


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(PARITY / "llama"))


@pytest.fixture(scope="module")
def sentencepiece_like() -> PreTrainedTokenizerFast:
    """Metaspace pieces ('▁Paris') with byte fallback ('<0x0A>'), as Llama/Mistral ship them."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
    )
    tok.train_from_iterator(["The capital of France is Paris"] * 50, trainer=trainer)
    tok.add_tokens([f"<0x{b:02X}>" for b in range(256)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")


def test_byte_level_display_keeps_spaces_and_bytes(byte_level: PreTrainedTokenizerFast) -> None:
    text = TokenText(byte_level)
    ids = byte_level.encode("The capital 🚀", add_special_tokens=False)
    shown = text.many(ids)
    assert shown[:2] == ["The", " capital"]
    assert "".join(shown).startswith("The capital ")
    assert text(byte_level.bos_token_id) == "<s>"


def test_sentencepiece_display_keeps_leading_space(
    sentencepiece_like: PreTrainedTokenizerFast,
) -> None:
    text = TokenText(sentencepiece_like)
    paris = sentencepiece_like.convert_tokens_to_ids("\u2581Paris")
    assert text(paris) == " Paris"
    newline = sentencepiece_like.convert_tokens_to_ids("<0x0A>")
    assert text(newline) == "\n"
    assert text.resolve(" Paris").token_id == paris
    assert text.resolve("\u2581Paris").token_id == paris


def test_resolve_exact_multi_and_missing(byte_level: PreTrainedTokenizerFast) -> None:
    text = TokenText(byte_level)
    exact = text.resolve(" capital")
    assert not exact.multi_token
    assert exact.pieces == [" capital"]
    multi = text.resolve("Parisian")
    assert multi.multi_token
    assert "".join(multi.pieces) == "Parisian"
    assert multi.token_id == byte_level.encode("Parisian", add_special_tokens=False)[0]
    with pytest.raises(TokenResolutionError):
        text.resolve("")


def test_string_without_tokens_is_an_error(tmp_path: Path) -> None:
    tok = Tokenizer(models.WordLevel({"<s>": 0, "hello": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")
    with pytest.raises(TokenResolutionError, match="yields no token"):
        TokenText(fast).resolve("   ")


def test_chat_template_has_one_bos_and_raw_adds_it(byte_level: PreTrainedTokenizerFast) -> None:
    chat = encode_prompt(byte_level, "Hello world", use_chat_template=True)
    assert chat.chat_template_applied
    assert chat.token_ids.count(byte_level.bos_token_id) == 1
    assert chat.text_seen.startswith("<s><|user|>\nHello world")
    assert chat.text_seen.endswith("<|assistant|>\n")
    raw = encode_prompt(byte_level, "Hello world", use_chat_template=False)
    assert not raw.chat_template_applied
    assert raw.token_ids[0] == byte_level.bos_token_id
    assert raw.text_seen == "Hello world"


def test_no_template_means_raw(sentencepiece_like: PreTrainedTokenizerFast) -> None:
    encoded = encode_prompt(sentencepiece_like, "Paris", use_chat_template=True)
    assert not encoded.chat_template_applied


def test_empty_prompt_is_rejected(byte_level: PreTrainedTokenizerFast) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        encode_prompt(byte_level, "", use_chat_template=False)
