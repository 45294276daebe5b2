"""Whether a run of token characters looks random: the opaque-token heuristics of
:mod:`integrity.engine.redact` (a credential of a format no pattern knows still looks like a
random run of 16+ characters: hex of 64+ bits, letters mixed with digits, base64, hex after a
prefix; names made of words do not)."""
from __future__ import annotations

import math
import re
from collections import Counter

# A run of token characters long enough to be a credential: letters, digits and the characters
# of base64 (``+/=``), base64url and prefixes (``_-``). '.', ':', '?', '&' and white space end a run,
# so host names, URLs' parts and sentences stay apart; a path is one run, but words separated
# by '/' switch character class too rarely to pass :func:`looks_opaque`. Which runs are
# random enough is decided in Python, after this.
RUN_CHARS = r"A-Za-z0-9_+=/\-"
MIN_OPAQUE_CHARS = 16  # 80+ bits of base-32/62: shorter runs are words, versions and short ids
OPAQUE_RUN = rf"[{RUN_CHARS}]{{{MIN_OPAQUE_CHARS},}}"
OPAQUE = re.compile(rf"(?<![{RUN_CHARS}])" + OPAQUE_RUN + rf"(?![{RUN_CHARS}])")
_HEX = re.compile(r"[0-9a-fA-F_\-]+")
MIN_HEX_DIGITS = 16  # a key in prose: 64 bits or more of hex with letters and digits (UUIDs included)
MIN_OPAQUE_ENTROPY = 3.2  # bits per character: random base-36/62 runs of 16+ characters mostly reach 3.5-4.3


def _entropy_floor(n: int, cap: float) -> float:
    """The entropy a random run of ``n`` characters reaches (some characters repeated): ``cap``
    from about 20 characters on, lower below (at most log2(n) is possible)."""
    return min(cap, math.log2(n) - 1.0)


def entropy(s: str) -> float:
    """Shannon entropy of the characters of ``s``, in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def class_switch_rate(run: str) -> float:
    """Share of adjacent letters and digits of different classes (upper, lower, digit),
    separators left out: about 0.4-0.6 in random tokens, under 0.15 in words with numbers
    (``release_2024_v2``); CamelCase identifiers (about 0.3) have no digits."""
    classes = ["u" if ch.isupper() else "l" if ch.islower() else "d" for ch in run if ch.isalnum()]
    return sum(a != b for a, b in zip(classes, classes[1:])) / max(1, len(classes) - 1)


def vowel_share(letters: list[str]) -> float:
    """Share of vowels among letters: about 0.35-0.4 in words and identifiers made of words,
    about 0.15-0.2 in random letters."""
    return sum(ch in "aeiouAEIOU" for ch in letters) / max(1, len(letters))


_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


_CONSONANTS5 = re.compile(r"[b-df-hj-np-tv-xz]{5}", re.IGNORECASE)


def _word_like(piece: str) -> bool:
    """4+ letters as words have them: a quarter to 60% vowels, never 5 consonants in a row, at
    most one letter pair in five (one in a short piece: ``linux``, ``proxy``) rare in English
    (random letters have about 20% vowels, long consonant runs and half their pairs rare), not
    only the letters of hex (``ebbb`` in a hash)."""
    if len(piece) < 4 or _HEX_LETTERS.fullmatch(piece) or _CONSONANTS5.search(piece):
        return False
    low = piece.lower()
    common = sum(low[i:i + 2] in _WORD_BIGRAMS for i in range(len(low) - 1))
    return 0.25 <= vowel_share(list(piece)) <= 0.6 and len(low) - 1 - common <= max(1, (len(low) - 1) // 5)


_HEX_LETTERS = re.compile(r"[a-fA-F]+")

# The letter pairs that make 99.5% of those in English words (352 of 676; counted in the human-written
# texts of ../shared/data/synthetic and the clean SST-2 rows, not in the Debian descriptions that
# benchmarks/masking.py measures readability on): random letters have about half their pairs outside.
_WORD_BIGRAMS = frozenset((
    "ab ac ad ae af ag ah ai aj ak al am an ap ar as at au av aw ax ay az ba bb be "
    "bi bj bl bo br bs bt bu by ca cc ce ch ci ck cl co cr cs ct cu cy da dd de dg "
    "di dl dm dn do dr ds du dv dw dy ea eb ec ed ee ef eg eh ei ek el em en eo ep "
    "eq er es et eu ev ew ex ey fa fe ff fi fl fo fr ft fu fy ga ge gg gh gi gl gm "
    "gn go gr gs gt gu gy ha he hi hl hm hn ho hr hs ht hu hy ia ib ic id ie if ig "
    "ii ik il im in io ip iq ir is it iu iv ix iz ja je jo ju ka ke ki kl kn ko ks "
    "ky la lb lc ld le lf lg li lk ll lm lo lp lr ls lt lu lv ly ma mb me mi mm mo "
    "mp ms mu my na nc nd ne nf ng nh ni nj nk nl nm nn no np nr ns nt nu nv ny oa "
    "ob oc od oe of og oh oi ok ol om on oo op or os ot ou ov ow ox oy pa pe ph pi "
    "pl po pp pr ps pt pu py qu ra rb rc rd re rf rg rh ri rk rl rm rn ro rp rr rs "
    "rt ru rv rw ry sa sb sc se sf sh si sk sl sm sn so sp sq ss st su sw sy ta tc "
    "te tf th ti tl tm tn to tr ts tt tu tw ty ua ub uc ud ue uf ug ui ul um un uo "
    "up ur us ut uy va ve vi vo vy wa we wh wi wl wn wo wr ws xa xc xe xi xp xt ya "
    "yc ye yi yl ym yn yo yp ys yt yw za ze zi"
).split())


def rare_pair_share(run: str) -> float:
    """Share of adjacent letter pairs (within stretches of letters) that English words rarely
    have: about half in random letters, under a tenth in words and names made of words."""
    pairs = [p for w in re.findall(r"[A-Za-z]+", run) for lw in (w.lower(),) for p in zip(lw, lw[1:])]
    return sum(a + b not in _WORD_BIGRAMS for a, b in pairs) / max(1, len(pairs))


def _beside_words(run: str) -> list[str] | None:
    """The letters and digits of ``run`` outside its word-like pieces (4+ letters: a CamelCase
    part or an all-lower or all-upper stretch, with vowels as words have them) when those
    pieces hold most of its letters (``QtQuickControls2``, ``Curve448-Goldilocks``,
    ``canary-21f968241311``); None when they do not (random tokens break into pieces of 1-3
    letters) or when 3 in 10 of its letter pairs are rare in English (random letters)."""
    spans = [m.span() for m in _WORD.finditer(run) if _word_like(m.group())]
    if not spans or rare_pair_share(run) >= 0.3 or \
            sum(b - a for a, b in spans) < 0.6 * sum(ch.isalpha() for ch in run):
        return None
    # what lies between the pieces (linear in the run, whatever its length)
    bounds = [0] + [x for span in spans for x in span] + [len(run)]
    return [ch for a, b in zip(bounds[::2], bounds[1::2]) for ch in run[a:b] if ch.isalnum()]


def _random_tail(rest: list[str]) -> bool:
    """What follows or precedes words in a run is a token: 12+ letters and digits together
    (48+ bits of hex; a version number or a date has fewer, or no letters)."""
    digits = sum(ch.isdigit() for ch in rest)
    return len(rest) >= 12 and 0 < digits < len(rest)


_HEX_PART = re.compile(r"(?:^|[_\-])([0-9a-fA-F]{12,})(?=$|[_\-])")


def _hex_part(run: str) -> bool:
    """A part of the run between '-' or '_' is 12+ hex digits with letters and digits
    (``CANARY-ee4222caa248``): a hex token after a prefix, whatever the prefix."""
    return any(0 < sum(ch.isdigit() for ch in h) < len(h) for h in _HEX_PART.findall(run))


def _looks_random(run: str) -> bool:
    """Letters and digits of a random token: hex of 16+ digits (a key, a hash, a UUID) or of
    12+ after a prefix, letters mixed with digits, or, without digits, both cases with capitals
    too many for CamelCase; character classes switching often and high entropy, or too few
    vowels to be words. A run mostly of words is judged by what is beside them."""
    alnum = [ch for ch in run if ch.isalnum()]
    if len(alnum) < 12:  # mostly separators: a rule, an ASCII drawing
        return False
    if _HEX.fullmatch(run):
        digits = sum(ch.isdigit() for ch in alnum)
        return len(alnum) >= MIN_HEX_DIGITS and 0 < digits < len(alnum)
    letters = [ch for ch in alnum if ch.isalpha()]
    n_upper = sum(ch.isupper() for ch in letters)
    upper, lower = n_upper > 0, n_upper < len(letters)
    bits = entropy(run)
    unwordy = len(alnum) >= 20 and vowel_share(letters) < 0.2 and bits >= 3.7
    if _hex_part(run):
        return True
    rest = _beside_words(run)
    if rest is not None:  # mostly words: only what is beside them may be a token
        return _random_tail(rest)
    if (len(letters) >= 12 and rare_pair_share(run) >= 0.3 and vowel_share(letters) < 0.35
            and max(map(len, re.findall(r"[A-Za-z]+", run))) >= 10):
        return True  # 10+ letters in a row that no language strings together (not ``libxml-perl``)
    if len(letters) < len(alnum) and letters:
        return unwordy or (class_switch_rate(run) >= 0.18 and bits >= _entropy_floor(len(run), MIN_OPAQUE_ENTROPY))
    if upper and lower:  # CamelCase has one capital per word (under a third); random letters half
        return unwordy or (n_upper / len(letters) >= 0.3 and class_switch_rate(run) >= 0.35
                           and bits >= _entropy_floor(len(alnum), 3.8))
    return False


def looks_opaque(run: str) -> bool:
    """A random-looking token (:func:`_looks_random`). A run with '/' is a path or a URL's path
    unless its longest part between slashes (12+ characters) is random too, or its parts are
    random letters and digits (base64 cut short by slashes): paths have words between theirs."""
    if "/" not in run:
        return _looks_random(run)
    longest = max(run.split("/"), key=len)
    if not _looks_random(run.replace("/", "")):
        return False
    if len(longest) >= 12 and _looks_random_part(longest):
        return True
    # base64 cut by slashes into short parts: no words in them, letter pairs no language has
    return _beside_words(run) is None and rare_pair_share(run) >= 0.3 and class_switch_rate(run) >= 0.35


def _looks_random_part(part: str) -> bool:
    """A part of a run (12+ characters) switching character class as often as random
    characters do (about half the time; words with a version number far less)."""
    letters = [ch for ch in part if ch.isalpha()]
    return len(letters) < len(part) and class_switch_rate(part) >= 0.3 or (
        len(letters) == len(part) and class_switch_rate(part) >= 0.35 and vowel_share(letters) < 0.3)
