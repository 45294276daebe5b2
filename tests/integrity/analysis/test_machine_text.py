"""Zero-shot machine-text evidence: features, the shipped detector, calibration against a human reference."""
import json
import textwrap

import numpy as np
import polars as pl
import pytest

from integrity.analysis.machine_text import (MODEL_PATH, ZS_FEATURES, calibrate_shard, fit_zero_shot, load_model,
                                             reference_percentile, zero_shot_features, zero_shot_logit)

PLAIN = ("The cat sat on the mat and looked at the door for a long time because it was hungry and the house "
         "was quiet. ") * 4
DENSE = ("Quasiparticle interferometry elucidates anisotropic pseudogap phenomenology in underdoped cuprates, "
         "notwithstanding heterogeneous stoichiometry (cf. Ref. [12]; Eq. 3). ") * 4


def test_features_per_text_and_nulls_for_texts_without_words():
    f = zero_shot_features([PLAIN, DENSE, "", None, "12345 ... !!!"])
    assert f.columns == list(ZS_FEATURES) and f.height == 5
    assert f["zs_surprisal_mean"][0] < f["zs_surprisal_mean"][1]  # common words carry fewer bits
    assert f["zs_rare_share"][0] < f["zs_rare_share"][1]
    assert f["zs_brackets"][1] > 0 and f["zs_brackets"][0] == 0
    for row in (2, 3, 4):  # no words: nothing measured (not zeros that would read as evidence)
        assert all(f[c][row] is None for c in ZS_FEATURES)


def test_line_wraps_and_spacing_are_not_style():
    wrapped = textwrap.fill(DENSE, 60).replace(". ", ".\n\n  ")
    assert wrapped.count("\n") > 10
    a, b = zero_shot_features([DENSE, wrapped]).rows()
    assert np.allclose(a, b)


def test_burstiness_needs_two_windows():
    f = zero_shot_features(["short text of few words", PLAIN + DENSE])
    assert f["zs_burstiness"][0] is None and f["zs_burstiness"][1] > 0


def test_shipped_model_is_plain_json_over_the_feature_list():
    m = load_model()
    assert m["features"] == list(ZS_FEATURES) and json.loads(MODEL_PATH.read_text())["coef"] == m["coef"]
    assert set(m["tpr_by_domain"]) == {"arxiv", "reddit"} and "held-out slice" in m["fitted_on"]
    s = zero_shot_logit(m, zero_shot_features([PLAIN, None]))
    assert np.isfinite(s[0]) and np.isnan(s[1])


def test_reference_percentile():
    ref = np.arange(100, dtype=float)
    p = reference_percentile(ref, np.array([-1.0, 49.5, 1000.0, np.nan]))
    assert p[0] == 0 and p[1] == pytest.approx(0.5) and p[2] == 1 and np.isnan(p[3])


def _model(tprs):
    return {"reference_quantile": 0.8, "tpr_by_domain": dict(enumerate(tprs))}


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.6])
def test_share_interval_covers_the_truth_when_the_true_positive_rate_is_in_range(share):
    """Human scores N(0, 1), machine N(1.65, 1): 79% of machine records lie above the human 80th percentile.
    The training domains saw rates of 0.7 and 0.88, the target domain's (0.79) lies between."""
    rng = np.random.default_rng(int(share * 100))
    ref = rng.normal(0, 1, 2000)
    n = 2000
    k = int(n * share)
    shard = np.r_[rng.normal(0, 1, n - k), rng.normal(1.65, 1, k)]
    r = calibrate_shard(_model([0.7, 0.88]), shard, ref)
    lo, hi = r["interval"]
    assert lo <= share <= hi and abs(r["estimate"] - share) < 0.08
    assert r["fpr"] == pytest.approx(0.2, abs=0.01) and r["tpr_range"] == [0.35, 0.88]


def test_share_needs_enough_records():
    r = calibrate_shard(_model([0.9]), np.zeros(5), np.zeros(1000))
    assert r["estimate"] is None and "too few" in r["note"]


def test_fit_recovers_a_detector_that_moves_to_a_shifted_domain():
    """Two domains whose human level differs (a shift of every feature), machine text shifted the same way
    in both: a detector fitted on one ranks the other's records, and its rates are stored per domain."""
    rng = np.random.default_rng(0)

    def domain(offset, n=300):
        x = rng.normal(offset, 1, (2 * n, len(ZS_FEATURES)))
        x[n:, :3] -= 1.5  # machine text: lower surprisal
        return pl.DataFrame(x, schema=list(ZS_FEATURES)), np.r_[np.zeros(n, bool), np.ones(n, bool)]

    fa, ya = domain(0.0)
    fb, yb = domain(3.0)
    m = fit_zero_shot(fa, ya, np.full(len(ya), "a"))
    json.dumps(m)  # plain numbers only
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yb, zero_shot_logit(m, fb)) > 0.95
    assert 0.8 < m["tpr_by_domain"]["a"] <= 1.0
