"""The shard share's estimators: the reference-domain test and what the estimate becomes out of domain."""
from types import SimpleNamespace

import polars as pl
import pytest

from integrity.analysis.machine_text import VOCAB_COLUMNS, zero_shot_features
from integrity.analysis.synthetic_share import MIN_OVERLAP_RATIO, reference_domain, shard_share
from tests.conftest import SHARED_DATA

needs_data = pytest.mark.skipif(not (SHARED_DATA / "debian").exists() or not (SHARED_DATA / "synthetic").exists(),
                                reason="../shared/data (debian/, synthetic/) is absent")


def words(texts: list[str]) -> pl.DataFrame:
    return zero_shot_features(texts, vocabulary=True)


def as_profile(texts: list[str]):
    return SimpleNamespace(features=words(texts))


def test_word_samples_are_bottom_k_content_word_hashes():
    f = words(["the man is in the house and it is a good day", "quasiparticle interferometry of cuprates and quasiparticle spectra",
               "quasiparticle spectra of cuprates", None])
    assert list(f.columns[-len(VOCAB_COLUMNS):]) == list(VOCAB_COLUMNS)
    assert f.select(VOCAB_COLUMNS).row(0) == (None,) * len(VOCAB_COLUMNS)  # only common words: nothing sampled
    a = [h for h in f.select(VOCAB_COLUMNS).row(1) if h is not None]
    b = [h for h in f.select(VOCAB_COLUMNS).row(2) if h is not None]
    assert a == sorted(a) and len(set(a)) == len(a) and set(b) <= set(a)  # shared words are sampled alike
    assert words(["quasiparticle spectra of cuprates"]).row(0) == f.row(2)  # stable across calls


@needs_data
def test_reference_domain_tells_another_domain_from_the_same_one():
    """Debian descriptions as the reference: other Debian descriptions are of its domain; human reddit posts
    (built here from the M4 set, not as in the benchmark) are not, and neither are Llama 2 reddit answers."""
    deb = pl.read_parquet(SHARED_DATA / "debian" / "descriptions.parquet", columns=["text"])["text"]
    ref = as_profile(deb.gather_every(97).head(600).to_list())
    same = reference_domain(words(deb.gather_every(89, offset=5).head(150).to_list()), ref)
    m4 = pl.read_parquet(SHARED_DATA / "synthetic" / "m4-reddit-llama2.parquet")
    posts = reference_domain(words(m4.filter(pl.col("source") == "human")["text"].to_list()), ref)
    answers = reference_domain(words(m4.filter(pl.col("source") == "llama2")["text"].to_list()), ref)
    assert not same["out_of_domain"] and same["ratio"] > 0.8
    assert posts["out_of_domain"] and posts["ratio"] < MIN_OVERLAP_RATIO
    assert answers["out_of_domain"]
    # profiles and features older than the word samples: no test, no verdict
    assert reference_domain(words(["x"]).drop(VOCAB_COLUMNS), ref) is None
    assert reference_domain(words(["a few words only"]), ref) is None  # too few sampled words to say


def test_out_of_domain_share_is_the_marker_bound_with_the_calibrated_ones_untrusted():
    clf = {"method": "classifier", "estimate": 0.93, "interval": [0.85, 0.98], "confidence": "high"}
    zs = {"method": "zero-shot", "estimate": 0.96, "interval": [0.9, 1.0]}
    out = {"out_of_domain": True, "ratio": 0.3}
    res = shard_share(100, 2, clf, zs, out)
    assert res["estimate"] == pytest.approx(0.02) and res["interval"][1] == 1.0 and 0 < res["interval"][0] < 0.02
    assert "another domain" in res["method"] and res["reference_from_another_domain"]
    assert res["not_trusted"]["classifier"]["estimate"] == 0.93 and res["not_trusted"]["zero_shot"]["estimate"] == 0.96
    # in domain: the classifier's estimate, the zero-shot one beside it, markers a floor
    res = shard_share(100, 2, clf, zs, {"out_of_domain": False, "ratio": 1.0})
    assert res["estimate"] == 0.93 and res["zero_shot"] is zs and "not_trusted" not in res
    res = shard_share(100, 0, None, None, None)
    assert "markers" in res["method"] and res["interval"] == [0.0, 1.0]
