"""Tokenizing a huge text in pieces (issue 13: bounded memory) gives the same tokens."""
import random

import numpy as np

from integrity.analysis.dedup.text import tokenize


def test_a_text_over_chunk_chars_is_tokenized_in_pieces_with_the_same_tokens():
    rng = random.Random(3)
    words = ["alpha", "Beta", "gamma42", "\u00e9t\u00e9", "\u4e2d\u6587", "x"]
    seps = [" ", "  ", ", ", "\n", "-", "\u3000"]
    big = "".join(rng.choice(words) + rng.choice(seps) for _ in range(3000))
    columns = {"text": ["short one", big, None, "tail text"], "caption": [None, "cap", "c", big[:500]]}
    whole = tokenize(columns, chunk_chars=10 ** 9)
    pieces = tokenize(columns, chunk_chars=300)  # the big text becomes ~60 pieces
    for name in ("hash", "doc", "field", "start", "end"):
        assert np.array_equal(getattr(whole, name), getattr(pieces, name)), name
    assert len(whole) > 3000
    starts, ends = pieces.start[pieces.doc == 1], pieces.end[pieces.doc == 1]
    assert {big[a:b] for a, b in zip(starts, ends)} >= {"alpha", "Beta", "gamma42"}
