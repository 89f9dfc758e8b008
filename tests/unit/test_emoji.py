"""Emoji detection on text; emoji-onset tokens of byte-level BPE (SmolLM2) and SentencePiece (Gemma 3) vocabularies."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from probes.emoji import count_emojis, emoji_counter, find_emojis, has_emoji
from probes.emoji_tokens import begins_emoji, emoji_onset_ids, emoji_onset_mask, emoji_start_tokens, token_byte_table
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


def test_the_quick_scan_agrees_with_the_grapheme_split():
    """``find_emojis`` skips texts without a candidate character; over every emoji code point and the ranges
    around them, alone and followed by U+FE0F or U+20E3, it agrees with classifying every grapheme cluster."""
    import regex

    from probes.emoji import is_emoji_cluster

    emoji_like = regex.compile(r"\p{Emoji}|\p{Emoji_Presentation}|\p{Extended_Pictographic}")
    code_points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and emoji_like.match(chr(c))]
    code_points += [*range(0x3000), *range(0x1F000, 0x1FB00)]
    for c in code_points:
        for text in (chr(c), chr(c) + "\ufe0f", chr(c) + "\u20e3", f"a {chr(c)} b"):
            reference = [m.group() for m in regex.finditer(r"\X", text) if is_emoji_cluster(m.group())]
            assert [m.text for m in find_emojis(text)] == reference, hex(c)
            assert has_emoji(text) == bool(reference), hex(c)


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
    assert not begins_emoji(b"1") and begins_emoji("1\ufe0f\u20e3".encode())  # a keycap needs its marks
    assert begins_emoji("a🏽".encode())  # a skin tone extends the cluster of the letter before it
    assert begins_emoji("©\ufe0f".encode()) and not begins_emoji("é😊".encode())


def test_byte_level_pieces_outside_the_byte_alphabet_are_their_utf8_text():
    """An added token with characters GPT-2's byte alphabet lacks (a plain space, U+00AD) is its UTF-8 text;
    every other piece maps character by character to bytes."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)  # its own: tokens are added to it
    tokenizer.add_tokens(["my token", "Ġsoft\xadhyphen"])
    table = token_byte_table(tokenizer)
    assert table[tokenizer.convert_tokens_to_ids("my token")] == b"my token"
    assert table[tokenizer.convert_tokens_to_ids("Ġsoft\xadhyphen")] == "Ġsoft\xadhyphen".encode()
    assert table[tokenizer.convert_tokens_to_ids("Ġhello")] == b" hello"
    assert table[10813] == "😊".encode()[:2]  # ðŁ: the F0 9F lead


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


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma3_tokenizer_dir):
    return AutoTokenizer.from_pretrained(gemma3_tokenizer_dir)


@pytest.fixture(scope="module")
def onset_tables(tokenizer, gemma_tokenizer):
    """(tokenizer, onset mask, byte table) of SmolLM2 and of Gemma 3, computed once."""
    return {
        name: (tok, emoji_onset_mask(tok), token_byte_table(tok))
        for name, tok in (("smollm2", tokenizer), ("gemma3", gemma_tokenizer))
    }


# "Hi " + emoji, without the "Hi" token: which tokens are onsets (O) and which token holds the emoji's first byte.
# SmolLM2 (byte-level BPE): only the F0 9F leads are onsets, so every 4-byte emoji part has one, 3-byte ones none.
# Gemma 3 (SentencePiece-style): whole pieces, sometimes after a bare "▁"; ✈️ is "✈" + U+FE0F (no onset),
# skin tones are separate pieces that continue an emoji (not onsets), keycaps start with a plain digit.
ONSET_CASES = [
    # emoji, kind, SmolLM2 pattern, SmolLM2 start, Gemma pieces, Gemma pattern, Gemma start
    ("😊", "single", "O.", 0, ["▁😊"], "O", 0),
    ("🔥", "single", "O..", 0, ["▁🔥"], "O", 0),
    ("🚀", "single", "O..", 0, ["▁", "🚀"], ".O", 1),
    ("🤖", "single", "O..", 0, ["▁", "🤖"], ".O", 1),
    ("✨", "single, 3 bytes", "...", 0, ["▁✨"], "O", 0),
    ("⭐", "single, 3 bytes", "...", 0, ["▁⭐"], "O", 0),
    ("❤️", "VS16", "....", 0, ["▁❤️"], "O", 0),
    ("☀️", "VS16", "....", 0, ["▁", "☀️"], ".O", 1),
    ("✈️", "VS16", "....", 0, ["▁", "✈", "\ufe0f"], "...", 1),
    ("👩\u200d💻", "ZWJ", "O....O..", 0, ["▁", "👩", "\u200d", "💻"], ".O.O", 1),
    ("👨\u200d👩\u200d👧", "ZWJ", "O....O....O..", 0, ["▁", "👨", "\u200d", "👩", "\u200d", "👧"], ".O.O.O", 1),
    ("🇫🇷", "flag", "O..O..", 0, ["▁", "🇫", "🇷"], ".OO", 1),
    ("🇯🇵", "flag", "O..O..", 0, ["▁", "🇯", "🇵"], ".OO", 1),
    ("1️⃣", "keycap", "......", 1, ["▁", "1", "\ufe0f\u20e3"], "...", 1),
    ("#️⃣", "keycap", ".....", 0, ["▁#", "\ufe0f\u20e3"], "..", 0),
    ("👍🏽", "skin tone", "O..O..", 0, ["▁👍", "🏽"], "O.", 0),
    ("👋🏿", "skin tone", "O..O..", 0, ["▁👋", "🏿"], "O.", 0),
]


def _onset_pattern(tables, emoji):
    tokenizer, mask, table = tables
    ids = tokenizer("Hi " + emoji, add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[:1]) == ["Hi"]
    ids = ids[1:]
    return ids, "".join("O" if mask[i] else "." for i in ids), emoji_start_tokens(ids, table)


@pytest.mark.parametrize("emoji, kind, smol_pattern, smol_start, gemma_pieces, gemma_pattern, gemma_start", ONSET_CASES)
def test_onset_mask_on_both_tokenizers(
    onset_tables, emoji, kind, smol_pattern, smol_start, gemma_pieces, gemma_pattern, gemma_start
):
    _ids, pattern, starts = _onset_pattern(onset_tables["smollm2"], emoji)
    assert (pattern, starts) == (smol_pattern, [smol_start]), kind
    ids, pattern, starts = _onset_pattern(onset_tables["gemma3"], emoji)
    assert onset_tables["gemma3"][0].convert_ids_to_tokens(ids) == gemma_pieces, kind
    assert (pattern, starts) == (gemma_pattern, [gemma_start]), kind


def test_onset_tokens_of_gemma3(onset_tables):
    gemma_tokenizer, mask, _table = onset_tables["gemma3"]
    assert len(mask) == 262144 and int(mask.sum()) == 1031
    vocab = gemma_tokenizer.get_vocab()
    for piece in ("😊", "▁😊", "❤️", "▁❤️", "✨", "🇫", "😂😂"):
        assert mask[vocab[piece]], piece
    for piece in ("❤", "▁❤", "✈", "©", "™", "🏽", "🏿", "\u200d", "\ufe0f", "<0xF0>", "<0x9F>", "▁", "<bos>"):
        assert not mask[vocab[piece]], piece


def test_emoji_start_tokens_on_gemma3(onset_tables):
    gemma_tokenizer, _mask, table = onset_tables["gemma3"]
    ids = gemma_tokenizer("Hi 😊 there and 🇫🇷 ok 👍🏽", add_special_tokens=False).input_ids
    starts = emoji_start_tokens(ids, table)
    assert [gemma_tokenizer.convert_ids_to_tokens(ids[i]) for i in starts] == ["▁😊", "🇫", "▁👍"]
