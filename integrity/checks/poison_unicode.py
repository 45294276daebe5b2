"""``poison.unicode``: invisible and deceptive Unicode that hides or disguises text.

Cheap and precise. One RE2 prefilter per family runs over each text column of a
batch in C++ (pyarrow); only the few records it lets through are examined in
Python. One finding per record; ``detail`` is ``{"matches": [...], "n_matches",
"kinds"}`` where each match has ``kind``, ``field``, ``start``/``end`` (code-point
offsets into the field, Python ``str`` indices), ``score`` and evidence.

Kinds and default scores (option ``scores``); matches below ``min_score`` are
dropped (default 0.5, so the "benign-looking" cases never become findings):

=======================  =====  ====================================================
kind                     score  what
=======================  =====  ====================================================
``tag_characters``       1.0    Unicode tag characters U+E0000-E007F, which render
                                as nothing and can smuggle ASCII; ``hidden_text``
                                holds the decoded payload. Emoji subdivision flags
                                (U+1F3F4 + tag letters + CANCEL TAG) are legitimate
                                and skipped.
``variation_selectors``  0.95   a run of >= ``min_selector_run`` variation
                                selectors (U+FE00-FE0F, U+E0100-E01EF): the
                                "emoji smuggling" byte encoding; ``hidden_bytes``
                                (hex) and ``hidden_text`` (if it decodes as UTF-8).
                                A single selector (emoji VS16, CJK variation
                                sequences) is legitimate.
``bidi_override``        0.9    LRO/RLO (U+202D/E), the "Trojan Source" reordering;
                                x0.6 when the text holds right-to-left letters.
``bidi_control``         0.7    LRE/RLE/PDF, LRI/RLI/FSI/PDI (U+202A-C, U+2066-9) in
                                text without right-to-left letters (in RTL text they
                                are normal: x0.25, below the default ``min_score``).
``invisible_run``        0.9    >= ``min_invisible_run`` consecutive invisible
                                formatting characters (ZWSP, ZWNJ, ZWJ, word joiner,
                                invisible operators, BOM, ...): binary steganography
                                or padding; ``bits`` reads ZWSP/ZWNJ-like pairs as 0/1.
``zero_width_in_word``   0.8    an invisible character splitting a word of a script
                                that does not use joiners (``pass\\u200bword``): evades
                                keyword filters and tokenizers.
``invisible_many``       0.7    >= ``many_invisible`` stray invisible characters in
                                one text, none of them legitimate.
``soft_hyphen_run``      0.7    two or more consecutive soft hyphens (U+00AD); a
                                single soft hyphen (hyphenation hint) is normal.
``homoglyph``            0.9    a word mixing Latin with Cyrillic/Greek letters that
                                look like Latin ones (``pаypal`` with Cyrillic а),
                                or the reverse; ``skeleton`` shows the word spelled
                                in its main script. Wholly Cyrillic or Greek words,
                                and mixes with non-confusable letters (``Δx``), are
                                not flagged.
``invisible_stray``      0.3    a lone zero-width character between words (copy-paste
                                debris in web text): dropped at the default
                                ``min_score``; lower ``min_score`` to see them.
=======================  =====  ====================================================

Legitimate uses that are never flagged: ZWJ inside emoji sequences (👩‍💻,
🏳️‍🌈), ZWNJ/ZWJ next to letters of scripts that use joiners (Arabic, Persian,
Syriac, Mongolian, the Indic scripts, Tibetan, Myanmar, Khmer), ZWSP as a word
separator in Thai, Lao, Khmer, Myanmar, Tibetan and CJK text, and a BOM at the
start of a field.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from integrity.checks._text_scan import (
    RawMatch,
    ScanGroup,
    TextScanCheck,
    text_scan_options,
)

DEFAULT_SCORES = {
    "tag_characters": 1.0,
    "variation_selectors": 0.95,
    "bidi_override": 0.9,
    "bidi_control": 0.7,
    "invisible_run": 0.9,
    "zero_width_in_word": 0.8,
    "invisible_many": 0.7,
    "soft_hyphen_run": 0.7,
    "homoglyph": 0.9,
    "invisible_stray": 0.3,
}
KINDS = tuple(DEFAULT_SCORES)

# ---------------------------------------------------------------------------
# character classes

#: invisible formatting characters (zero width, joiners, invisible operators, fillers)
INVISIBLE = {
    0x200B: "ZWSP", 0x200C: "ZWNJ", 0x200D: "ZWJ", 0x2060: "WJ", 0x2061: "FUNCTION APPLICATION",
    0x2062: "INVISIBLE TIMES", 0x2063: "INVISIBLE SEPARATOR", 0x2064: "INVISIBLE PLUS", 0xFEFF: "BOM/ZWNBSP",
    0x180E: "MONGOLIAN VOWEL SEPARATOR", 0x034F: "COMBINING GRAPHEME JOINER", 0x115F: "HANGUL CHOSEONG FILLER",
    0x1160: "HANGUL JUNGSEONG FILLER", 0x3164: "HANGUL FILLER", 0xFFA0: "HALFWIDTH HANGUL FILLER",
    0x2028: None, 0x2029: None,  # separators: visible line breaks, not reported
}
INVISIBLE = {k: v for k, v in INVISIBLE.items() if v}
BIDI_OVERRIDE = {0x202D: "LRO", 0x202E: "RLO"}
BIDI_CONTROL = {0x202A: "LRE", 0x202B: "RLE", 0x202C: "PDF", 0x2066: "LRI", 0x2067: "RLI", 0x2068: "FSI", 0x2069: "PDI"}
SOFT_HYPHEN = 0x00AD

_INVISIBLE_RE2 = "".join(f"\\x{{{cp:04X}}}" for cp in sorted(INVISIBLE))
PREFILTER_HIDDEN = (
    "[" + _INVISIBLE_RE2 + r"\x{202A}-\x{202E}\x{2066}-\x{2069}\x{00AD}\x{E0000}-\x{E007F}\x{FE00}-\x{FE0F}\x{E0100}-\x{E01EF}]"
)
# a Latin letter next to a Cyrillic/Greek one (every mixed word has such a pair)
_LATIN = r"A-Za-z\x{00C0}-\x{024F}"
_CYRGRK = r"\x{0370}-\x{03FF}\x{0400}-\x{052F}"
PREFILTER_HOMOGLYPH = f"[{_LATIN}][{_CYRGRK}]|[{_CYRGRK}][{_LATIN}]"


def _in(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(a <= cp <= b for a, b in ranges)


# scripts that use ZWNJ/ZWJ as part of normal spelling
_JOINING_SCRIPTS = (
    (0x0590, 0x08FF),  # Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic, Arabic ext.
    (0x0900, 0x0DFF),  # Devanagari ... Sinhala
    (0x0F00, 0x10FF),  # Tibetan, Myanmar, Georgian
    (0x1780, 0x18AF),  # Khmer, Mongolian
    (0x1900, 0x1CFF),  # Limbu ... Vedic extensions
    (0xA800, 0xABFF),  # Syloti Nagri ... Meetei Mayek
    (0xFB1D, 0xFDFF), (0xFE70, 0xFEFE),  # presentation forms
    (0x10A00, 0x10A5F), (0x11000, 0x11FFF),  # Kharoshthi, Brahmi & co
)
# scripts written without spaces, where ZWSP/WJ mark word boundaries
_NO_SPACE_SCRIPTS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF), (0x19E0, 0x19FF),  # Khmer
    (0x2E80, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),  # CJK, kana, fullwidth
    (0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F),  # Hangul
    (0x20000, 0x3FFFF),
)
_RTL = ((0x0590, 0x08FF), (0xFB1D, 0xFDFF), (0xFE70, 0xFEFE), (0x10800, 0x10FFF), (0x1E800, 0x1EFFF))
_EMOJI = (
    (0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x2190, 0x21FF), (0x2300, 0x23FF),
    (0x2190, 0x21FF), (0x1F1E6, 0x1F1FF), (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x2049),
    (0x2122, 0x2139), (0x24C2, 0x24C2), (0x25A0, 0x25FF), (0x2934, 0x2935), (0x3030, 0x303D),
    (0xFE0F, 0xFE0F), (0x20E3, 0x20E3), (0xE0020, 0xE007F),
)


def _is_emoji(ch: str | None) -> bool:
    return ch is not None and _in(ord(ch), _EMOJI)


def _script_of(ch: str) -> str | None:
    """Coarse script of a letter: latin, cyrillic, greek, or other (None for non-letters)."""
    if not ch.isalpha():
        return None
    cp = ord(ch)
    if cp < 0x0250 or 0x1E00 <= cp <= 0x1EFF or 0x2C60 <= cp <= 0x2C7F or 0xA720 <= cp <= 0xA7FF or 0xFF21 <= cp <= 0xFF5A:
        return "latin"
    if 0x0400 <= cp <= 0x052F or 0x1C80 <= cp <= 0x1C8F or 0x2DE0 <= cp <= 0x2DFF or 0xA640 <= cp <= 0xA69F:
        return "cyrillic"
    if 0x0370 <= cp <= 0x03FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    return "other"


# Cyrillic and Greek letters that render like a Latin letter (Unicode confusables, conservative)
CONFUSABLE_TO_LATIN = {
    # Cyrillic lower
    "а": "a", "в": "b", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ѵ": "v", "ү": "y", "ԍ": "g",
    # Cyrillic upper
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Ӏ": "I", "Ԁ": "D",
    # Greek
    "ο": "o", "ν": "v", "ρ": "p", "ϲ": "c", "ϳ": "j", "κ": "k", "ι": "i", "υ": "u", "τ": "t",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
}
# Latin letters that render like Cyrillic ones (for the mostly-Cyrillic direction)
LATIN_TO_CYRILLIC = {
    "a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "y": "у", "x": "х", "i": "і", "s": "ѕ", "j": "ј",
    "A": "А", "B": "В", "E": "Е", "K": "К", "M": "М", "H": "Н", "O": "О", "P": "Р", "C": "С", "T": "Т",
    "X": "Х", "Y": "У", "I": "І", "S": "Ѕ",
}
LATIN_TO_GREEK = {
    "o": "ο", "v": "ν", "p": "ρ", "k": "κ", "i": "ι", "u": "υ", "t": "τ",
    "A": "Α", "B": "Β", "E": "Ε", "Z": "Ζ", "H": "Η", "I": "Ι", "K": "Κ", "M": "Μ", "N": "Ν", "O": "Ο",
    "P": "Ρ", "T": "Τ", "Y": "Υ", "X": "Χ",
}


# ---------------------------------------------------------------------------
# detectors


def _decode_tags(run: str) -> str:
    out = []
    for ch in run:
        cp = ord(ch) - 0xE0000
        if 0x20 <= cp <= 0x7E:
            out.append(chr(cp))
    return "".join(out)


def _is_flag_tag_sequence(text: str, start: int, end: int) -> bool:
    """U+1F3F4 WAVING BLACK FLAG + tag letters/digits + CANCEL TAG: a subdivision flag."""
    run = text[start:end]
    if start == 0 or ord(text[start - 1]) != 0x1F3F4 or not run or ord(run[-1]) != 0xE007F:
        return False
    body = run[:-1]
    return 1 <= len(body) <= 7 and all(0xE0030 <= ord(c) <= 0xE0039 or 0xE0061 <= ord(c) <= 0xE007A for c in body)


def _selector_byte(cp: int) -> int | None:
    if 0xFE00 <= cp <= 0xFE0F:
        return cp - 0xFE00
    if 0xE0100 <= cp <= 0xE01EF:
        return cp - 0xE0100 + 16
    return None


def _runs(text: str, pred) -> Iterator[tuple[int, int]]:
    i, n = 0, len(text)
    while i < n:
        if pred(ord(text[i])):
            j = i + 1
            while j < n and pred(ord(text[j])):
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def _scan_hidden_with(min_selector_run: int, min_invisible_run: int, many_invisible: int):
    def scan(text: str) -> Iterator[RawMatch]:
        has_rtl = any(_in(ord(c), _RTL) for c in text if ord(c) >= 0x0590 and c.isalpha())
        # tag characters
        for s, e in _runs(text, lambda cp: 0xE0000 <= cp <= 0xE007F):
            if _is_flag_tag_sequence(text, s, e):
                continue
            hidden = _decode_tags(text[s:e])
            yield "tag_characters", s, e, 1.0, {"hidden_text": hidden[:500], "n_chars": e - s}
        # variation selectors (beyond the one a glyph may legitimately carry)
        for s, e in _runs(text, lambda cp: _selector_byte(cp) is not None):
            if e - s >= min_selector_run:
                data = bytes(_selector_byte(ord(c)) for c in text[s:e])
                extra: dict[str, Any] = {"hidden_bytes": data[:256].hex(), "n_chars": e - s}
                try:
                    extra["hidden_text"] = data.decode("utf-8")[:500]
                except UnicodeDecodeError:
                    pass
                yield "variation_selectors", s, e, 1.0, extra
        # bidi controls
        for i, ch in enumerate(text):
            cp = ord(ch)
            if cp in BIDI_OVERRIDE:
                yield "bidi_override", i, i + 1, 0.6 if has_rtl else 1.0, {"char": BIDI_OVERRIDE[cp], "rtl_text": has_rtl}
            elif cp in BIDI_CONTROL:
                yield "bidi_control", i, i + 1, 0.25 if has_rtl else 1.0, {"char": BIDI_CONTROL[cp], "rtl_text": has_rtl}
        # soft hyphen runs
        for s, e in _runs(text, lambda cp: cp == SOFT_HYPHEN):
            if e - s >= 2:
                yield "soft_hyphen_run", s, e, 1.0, {"n_chars": e - s}
        # zero-width / invisible characters
        stray: list[tuple[int, int, str]] = []
        for s, e in _runs(text, lambda cp: cp in INVISIBLE):
            run = text[s:e]
            names = sorted({INVISIBLE[ord(c)] for c in run})
            prev = text[s - 1] if s > 0 else None
            nxt = text[e] if e < len(text) else None
            if e - s >= min_invisible_run:
                bits = "".join("1" if ord(c) in (0x200C, 0x200D, 0x2062) else "0" for c in run[:512])
                yield "invisible_run", s, e, 1.0, {"chars": names, "n_chars": e - s, "bits": bits[:128]}
                continue
            if _legit_invisible(run, prev, nxt, s):
                continue
            p_script = _script_of(prev) if prev else None
            n_script = _script_of(nxt) if nxt else None
            if p_script in ("latin", "cyrillic", "greek") and n_script in ("latin", "cyrillic", "greek"):
                yield "zero_width_in_word", s, e, 1.0, {"chars": names, "around": (prev or "") + (nxt or "")}
                continue
            stray.append((s, e, ",".join(names)))
        if len(stray) >= many_invisible:
            s, e = stray[0][0], stray[-1][1]
            yield "invisible_many", s, e, 1.0, {"n_runs": len(stray), "chars": sorted({x[2] for x in stray})}
        else:
            for s, e, names in stray:
                yield "invisible_stray", s, e, 1.0, {"chars": names.split(",")}

    return scan


def _legit_invisible(run: str, prev: str | None, nxt: str | None, start: int) -> bool:
    cps = {ord(c) for c in run}
    if cps == {0xFEFF} and start == 0:
        return True  # byte order mark at the start of a field
    around = [c for c in (prev, nxt) if c is not None]
    if cps <= {0x200D, 0xFE0F} and prev is not None and nxt is not None and (_is_emoji(prev) or ord(prev) in range(0x1F3FB, 0x1F400)) and _is_emoji(nxt):
        return True  # emoji ZWJ sequence
    if cps <= {0x200C, 0x200D} and any(_in(ord(c), _JOINING_SCRIPTS) for c in around):
        return True  # joiners in Arabic/Persian/Indic/... spelling
    if cps <= {0x200B, 0x2060, 0x200C, 0xFEFF} and any(_in(ord(c), _NO_SPACE_SCRIPTS) for c in around):
        return True  # word boundaries in Thai, Khmer, CJK, ...
    if cps <= {0x115F, 0x1160, 0x3164, 0xFFA0} and any(_in(ord(c), ((0x1100, 0x11FF), (0xAC00, 0xD7AF), (0x3130, 0x318F))) for c in around):
        return True  # Hangul fillers in Korean text
    if cps == {0x034F}:
        return True  # combining grapheme joiner: used in collation-sensitive spellings
    return False


def _word_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of words: letters plus the combining marks inside them."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isalpha():
            j = i + 1
            while j < n and (text[j].isalpha() or unicodedata.category(text[j]).startswith("M")):
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def _scan_homoglyph(text: str) -> Iterator[RawMatch]:
    for s, e in _word_spans(text):
        word = text[s:e]
        scripts = [_script_of(c) for c in word]
        counts = {k: scripts.count(k) for k in ("latin", "cyrillic", "greek", "other")}
        if counts["other"] or sum(1 for k in ("latin", "cyrillic", "greek") if counts[k]) < 2:
            continue
        letters = [(c, sc) for c, sc in zip(word, scripts) if sc]
        n = len(letters)
        if n < 3:
            continue  # "Xα", "aβ": symbols and units, too short to tell
        main = max(("latin", "cyrillic", "greek"), key=lambda k: (counts[k], k == "latin"))
        foreign = [c for c, sc in letters if sc != main]
        if main == "latin":
            table = CONFUSABLE_TO_LATIN
        elif main == "cyrillic":
            table = {**LATIN_TO_CYRILLIC, **{k: v for k, v in CONFUSABLE_TO_LATIN.items() if _script_of(k) == "greek"}}
        else:
            table = {**LATIN_TO_GREEK}
        if not all(c in table for c in foreign):
            continue  # a non-lookalike foreign letter: a real mixed term (e.g. "Δx", "βcatenin"), not a disguise
        if counts[main] <= len(foreign) or counts[main] < 3:
            continue  # no clear main script (e.g. "αvβ3" integrin notation)
        skeleton = "".join(table.get(c, c) if _script_of(c) != main else c for c in word)
        yield "homoglyph", s, e, 1.0, {
            "word": word, "skeleton": skeleton, "script": main,
            "foreign": [f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in dict.fromkeys(foreign)],
        }


# ---------------------------------------------------------------------------
# the check


class UnicodeCheck(TextScanCheck):
    name = "poison.unicode"
    description = (
        "Hidden or deceptive Unicode: tag characters (decoded), variation-selector smuggling, bidi overrides, "
        "zero-width characters inside words or in runs, soft-hyphen runs, homoglyph-mixed words."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES
    redact = False  # the matches are what a reviewer must read (no secret in them)

    class Options(text_scan_options(KINDS, DEFAULT_SCORES, min_score=0.5,
                                    min_score_description="drop weaker matches (lone stray zero-width spaces score 0.3)")):
        min_invisible_run: int = Field(3, ge=1, description="consecutive invisible characters that make a run")
        many_invisible: int = Field(8, ge=1, description="stray invisible characters in one text that make invisible_many")
        min_selector_run: int = Field(3, ge=2, description="consecutive variation selectors that carry a payload (one is normal)")

    default_severity = "warn"
    version = 1

    def scan_groups(self) -> list[ScanGroup]:
        o = self.options
        hidden_kinds = frozenset(KINDS) - {"homoglyph"}
        return [
            ScanGroup("hidden", PREFILTER_HIDDEN, hidden_kinds,
                      _scan_hidden_with(o["min_selector_run"], o["min_invisible_run"], o["many_invisible"])),
            ScanGroup("homoglyph", PREFILTER_HOMOGLYPH, frozenset({"homoglyph"}), _scan_homoglyph),
        ]
