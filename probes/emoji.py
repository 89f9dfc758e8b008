"""Emoji detection in text, on grapheme clusters.

A grapheme cluster (``\\X``) counts as one emoji when it contains a character with the
Emoji_Presentation property (😊, 👍🏽, 👨‍👩‍👧, 🇫🇷, ✨), or when it starts with an Emoji character and carries
the emoji variation selector U+FE0F or the keycap mark U+20E3 (❤️, ☺️, 1️⃣). Bare text-presentation
symbols (©, ®, ™, ‼, ☺, ❤ without U+FE0F) are not emojis.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import regex

_GRAPHEME = regex.compile(r"\X")
_PRESENTATION = regex.compile(r"\p{Emoji_Presentation}")
_EMOJI_START = regex.compile(r"^\p{Emoji}")
_VS16 = "\ufe0f"
_KEYCAP = "\u20e3"
# A text without any of these characters holds no emoji cluster (see ``is_emoji_cluster``): one scan instead of a
# grapheme split, which matters for datasets checked cell by cell.
_CANDIDATE = regex.compile(r"[\p{Emoji_Presentation}\ufe0f\u20e3]")


@dataclass(frozen=True)
class EmojiMatch:
    start: int  # character offset in the text
    end: int
    text: str


def is_emoji_cluster(cluster: str) -> bool:
    if _PRESENTATION.search(cluster):
        return True
    return (_VS16 in cluster or _KEYCAP in cluster) and bool(_EMOJI_START.match(cluster))


def may_hold_emoji(text: str) -> bool:
    """False when ``text`` has none of the characters every emoji cluster holds one of (one scan, no grapheme split)."""
    return bool(_CANDIDATE.search(text))


def find_emojis(text: str) -> list[EmojiMatch]:
    """Every emoji in ``text``, one match per grapheme cluster, in order."""
    if not may_hold_emoji(text):
        return []
    return [EmojiMatch(m.start(), m.end(), m.group()) for m in _GRAPHEME.finditer(text) if is_emoji_cluster(m.group())]


def count_emojis(text: str) -> int:
    return len(find_emojis(text))


def has_emoji(text: str) -> bool:
    return may_hold_emoji(text) and any(is_emoji_cluster(m.group()) for m in _GRAPHEME.finditer(text))


def emoji_counter(texts: list[str]) -> Counter[str]:
    """How often each emoji occurs over ``texts`` (variation selectors kept, so ❤️ and ❤ differ)."""
    return Counter(match.text for text in texts for match in find_emojis(text))
