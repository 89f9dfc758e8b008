"""Emoji detection on text and emoji-onset tokens of a byte-level BPE vocabulary (SmolLM2)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from probes.emoji import count_emojis, emoji_counter, find_emojis, has_emoji
from probes.emoji_tokens import begins_emoji, emoji_onset_ids, emoji_start_tokens, token_byte_table
from tests.conftest import TOKENIZER_DIR


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Great day 😊", ["😊"]),
        ("thumbs 👍🏽 up", ["👍🏽"]),  # skin tone stays one emoji
        ("family 👨‍👩‍👧 time", ["👨‍👩‍👧"]),  # ZWJ sequence
        ("Vive la 🇫🇷!", ["🇫🇷"]),  # flag
        ("press 1️⃣ now", ["1️⃣"]),  # keycap
        ("love ❤️ and ✨", ["❤️", "✨"]),
        ("© 2024 Foo™ ® ‼ ☺ ❤", []),  # text-presentation symbols are not emojis
        ("plain text, no emoji: 3 < 5", []),
    ],
)
def test_find_emojis(text, expected):
    assert [m.text for m in find_emojis(text)] == expected
    assert count_emojis(text) == len(expected)
    assert has_emoji(text) == bool(expected)


def test_emoji_counter():
    assert emoji_counter(["😊 hi 😊", "🎉"]) == {"😊": 2, "🎉": 1}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def test_onset_tokens_of_smollm2(tokenizer):
    # STACK_NOTES: the tokens that begin a 4-byte emoji in SmolLM2's vocabulary.
    assert emoji_onset_ids(tokenizer) == [10813, 15107, 40303, 47526]


def test_begins_emoji_on_bytes():
    assert begins_emoji(" 😊".encode())
    assert begins_emoji(b"\xf0\x9f")  # lead of U+1F000-U+1FFFF
    assert not begins_emoji(b"\xe2")  # shared with punctuation
    assert not begins_emoji("©".encode())
    assert not begins_emoji(b"\x98\x8a")  # continuation bytes
    assert not begins_emoji(b"hello")


def test_emoji_start_tokens(tokenizer):
    table = token_byte_table(tokenizer)
    ids = tokenizer("Hi 😊 there and 🇫🇷 ok", add_special_tokens=False).input_ids
    starts = emoji_start_tokens(ids, table)
    assert [tokenizer.decode(ids[i:]).lstrip()[0] for i in starts] == ["😊", "🇫"]
    assert all(ids[i] in (10813, 15107, 40303, 47526) for i in starts)


def test_wilson_interval_and_rates():
    from probes.metrics import emoji_rate, wilson_interval

    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)  # textbook value for 0/10
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    rate = emoji_rate(["hi 😊😊", "plain", "🎉 ok"])
    assert (rate.responses, rate.with_emoji, rate.emojis) == (3, 2, 3)
