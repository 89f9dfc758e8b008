"""Emojis at the token level: per-token byte strings, the emoji-onset token mask, pre-emoji positions.

Byte-level BPE vocabularies (SmolLM2, GPT-2, LLaMA-3) split most emojis into several byte tokens
(😊 = a lead token for bytes F0 9F plus two byte tokens), so "emoji probability" is defined on
*onset* tokens: tokens whose bytes, after leading whitespace, begin an emoji. A token counts as an
onset when it starts with a whole emoji, or when it is an incomplete UTF-8 prefix under which at
least 40 % of the assigned code points are pictographic. F0 9F qualifies (U+1F000-U+1FFFF: 48 %
emoji, the rest mostly legacy-computing symbols and arrows that chat models rarely write); the
three-byte leads E2 98 (33 %), E2 9C (27 %) and a bare E2 (4 %, shared with punctuation) do not, so
an emoji such as ✨ that a vocabulary only spells from those leads has no onset token there.

SentencePiece-style vocabularies (Gemma, LLaMA-2; pieces with ``▁`` for a space, ``<0xNN>`` byte
fallback) hold many emojis as whole pieces (``▁😊``, ``❤️``), which are onsets. A lone byte-fallback
piece is judged like any incomplete prefix (``<0xF0>`` alone: 1 % pictographic, not an onset), so an
emoji such a vocabulary lacks has no onset token. Pieces that continue an emoji are never onsets: a
bare skin-tone modifier (``🏽`` after ``👍``), a zero-width joiner, U+FE0F or the keycap mark. A piece
with a text-presentation symbol alone (``❤``, ``✈``, ``©``) is not an onset either, even where the
vocabulary spells the emoji form as that piece plus a separate U+FE0F piece (Gemma: ✈️ = ``✈`` + U+FE0F).
Keycaps (1️⃣) begin with an ordinary digit, ``#`` or ``*``, so no vocabulary has an onset for them.
"""

from __future__ import annotations

import bisect
import json
import unicodedata
from collections import Counter
from functools import lru_cache

import regex
import torch

from probes.emoji import find_emojis, is_emoji_cluster, may_hold_emoji

_PICTOGRAPHIC = regex.compile(r"\p{Emoji_Presentation}|\p{Extended_Pictographic}|\p{Regional_Indicator}")
_GRAPHEME = regex.compile(r"\X")
_MODIFIER = regex.compile(r"\p{Emoji_Modifier}")  # skin tones U+1F3FB-U+1F3FF: they follow a base emoji
ONSET_SHARE = 0.4
_UNASSIGNED = ("Cn", "Cs", "Co")  # unassigned, surrogate, private use: not counted


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "sentencepiece"
    # The decoder's own JSON (its pickled state), not the whole tokenizer's: that one holds the vocabulary.
    decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
    return "bytelevel" if "ByteLevel" in kinds else "sentencepiece"


def token_byte_table(tokenizer) -> list[bytes | None]:
    """For every token id, the bytes it contributes to decoded text; None for special tokens."""
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    kind = _decoder_kind(tokenizer)
    table: list[bytes | None] = []
    if kind == "bytelevel":
        decoder = _gpt2_byte_decoder()
        as_latin1 = str.maketrans({ch: chr(byte) for ch, byte in decoder.items()})  # one C call per piece
        outside = regex.compile("[^" + regex.escape("".join(decoder)) + "]")
        for token_id, piece in enumerate(pieces):
            if token_id in special or piece is None:
                table.append(None)
            else:  # a piece with a character outside the byte alphabet (an added token) is its UTF-8 text
                table.append(piece.encode() if outside.search(piece) else piece.translate(as_latin1).encode("latin-1"))
        return table
    for token_id, piece in enumerate(pieces):
        if token_id in special or piece is None:
            table.append(None)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            table.append(bytes([int(piece[3:5], 16)]))
        else:
            table.append(piece.replace("\u2581", " ").encode())
    return table


@lru_cache(maxsize=4096)
def _pictographic_share(prefix: bytes) -> float:
    """Share of assigned code points whose UTF-8 encoding starts with ``prefix`` that are pictographic."""
    lead = prefix[0]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4

    def code_point(encoded: bytes) -> int:  # the bits of a UTF-8 sequence, overlong or not
        value = lead & (0x7F >> length)
        for byte in encoded[1:]:
            value = value << 6 | byte & 0x3F
        return value

    # Clamped to the shortest-form range: a lone F0 covers U+10000-U+3FFFF, not the overlong F0 80 80 80.
    lo = max(code_point(prefix + b"\x80" * (length - len(prefix))), (0x80, 0x800, 0x10000)[length - 2])
    hi = min(code_point(prefix + b"\xbf" * (length - len(prefix))), 0x10FFFF)
    chars = "".join(map(chr, range(lo, hi + 1)))  # every code point of the range, scanned in C below
    categories = Counter(map(unicodedata.category, chars))
    assigned = len(chars) - sum(categories[c] for c in _UNASSIGNED)
    pictographic = sum(unicodedata.category(c) not in _UNASSIGNED for c in _PICTOGRAPHIC.findall(chars))
    return pictographic / assigned if assigned else 0.0


def begins_emoji(token_bytes: bytes) -> bool:
    """Whether a token's bytes (leading whitespace ignored) begin an emoji."""
    body = token_bytes.lstrip(b" \t\n\r")
    if not body or 0x80 <= body[0] < 0xC0 or body.isascii():  # ASCII alone holds no emoji (see probes.emoji)
        return False
    text = body.decode("utf-8", errors="ignore")
    complete = len(text.encode()) == len(body)
    if complete and not may_hold_emoji(text):
        return False
    if text:
        first = _GRAPHEME.match(text)
        if first and is_emoji_cluster(first.group()):
            return not _MODIFIER.match(first.group())
        if complete or len(first.group().encode()) < len(body):
            return False
    # An incomplete trailing character: judge by what code points the prefix can still become.
    return _pictographic_share(bytes(body)) >= ONSET_SHARE


def emoji_onset_mask(tokenizer, table: list[bytes | None] | None = None) -> torch.Tensor:
    """[vocab] bool: True for tokens that begin an emoji (``table``: the tokenizer's ``token_byte_table``, if
    the caller has it already)."""
    table = token_byte_table(tokenizer) if table is None else table
    return torch.tensor([b is not None and begins_emoji(b) for b in table], dtype=torch.bool)


def emoji_onset_ids(tokenizer, table: list[bytes | None] | None = None) -> list[int]:
    return torch.nonzero(emoji_onset_mask(tokenizer, table)).flatten().tolist()


def emoji_start_tokens(token_ids: list[int], table: list[bytes | None]) -> list[int]:
    """Indices (into ``token_ids``) of the tokens that hold the first byte of each emoji in the decoded text."""
    chunks = [table[t] or b"" for t in token_ids]
    ends = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        ends.append(total)
    text = b"".join(chunks).decode("utf-8", errors="surrogateescape")
    starts = []
    for match in find_emojis(text):
        byte_offset = len(text[: match.start].encode("utf-8", errors="surrogateescape"))
        starts.append(bisect.bisect_right(ends, byte_offset))
    return sorted(set(starts))
