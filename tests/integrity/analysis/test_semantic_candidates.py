"""Candidate pairs, leader clusters and the re-scoring plan of dedup.semantic (NumPy and faiss)."""
from __future__ import annotations

import numpy as np
import pytest

from integrity.analysis.semantic_candidates import calibrate_thresholds, knn, leader_clusters, rescore_budget, rescore_plan


def test_leader_clustering_does_not_chain_unrelated_documents():
    # A ~ B (0.9), B ~ C (0.9), but A and C are far apart (~0.63): C must not join A's cluster
    t = np.deg2rad(25.8)
    x = np.array([[1, 0, 0], [np.cos(t), np.sin(t), 0], [np.cos(2 * t), np.sin(2 * t), 0], [0, 0, 1]],
                 dtype=np.float32)
    sims, nbrs = knn(x, 4, exact_max=100, nprobe=1)
    rep, sim = leader_clusters(x, sims, nbrs, np.arange(4), threshold=0.85)
    assert rep.tolist() == [0, 0, 2, 3]
    assert sim[1] == pytest.approx(0.9, abs=0.01)


def test_ivf_index_above_the_exact_size_finds_planted_pairs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x[2000:2100] = x[:100] + 0.1 * rng.standard_normal((100, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, nbrs = knn(x, 5, exact_max=1000, nprobe=8)  # IVF path
    rep, _ = leader_clusters(x, sims, nbrs, np.arange(3000), threshold=0.9)
    assert (rep[2000:2100] == np.arange(100)).mean() >= 0.95
    assert (rep[100:2000] == np.arange(100, 2000)).all()


def test_rescore_plan_spends_the_budget_on_the_most_similar_open_pairs():
    # pairs (0,1) .99 and (2,3) .98 are sure; (4,5) .9, (6,7) .8, (8,9) .7 are open; budget 4 contents
    a, b = np.array([0, 2, 4, 6, 8]), np.array([1, 3, 5, 7, 9])
    sim = np.array([0.99, 0.98, 0.9, 0.8, 0.7], dtype=np.float32)
    plan = rescore_plan(10, a, b, sim, budget=4, accept=0.97)
    assert plan.binds and plan.candidates == 10
    assert plan.static_only.tolist() == [0, 1, 2, 3] and plan.rescore.tolist() == [4, 5, 6, 7]
    cov = plan.coverage(4, 0.97)
    assert (cov["rescored"], cov["static_only"], cov["not_compared"]) == (4, 4, 2)
    free = rescore_plan(10, a, b, sim, budget=None, accept=0.97)  # no budget: everything re-scored
    assert not free.binds and free.rescore.tolist() == list(range(10)) and len(free.static_only) == 0
    assert rescore_budget({"rescore_per_shard": 100, "rescore_max_records": 250}, shards=3) == 250
    assert rescore_budget({"rescore_per_shard": None, "rescore_max_records": None}, shards=3) is None
    # a share of the scan's contents: the least of the caps binds
    share = {"rescore_share": 0.5, "rescore_per_shard": None, "rescore_max_records": None}
    assert rescore_budget(share, shards=3, contents=1001) == 501
    assert rescore_budget(dict(share, rescore_per_shard=100), shards=3, contents=1001) == 300
    assert rescore_budget(share, shards=3) is None  # contents unknown: no share cap


def test_calibrated_thresholds_keep_the_recall_and_precision_asked_for():
    # static similarity of 10 labelled pairs; the full model's pairs are the ones marked True
    s = np.array([0.99, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6])
    t = np.array([True, True, True, False, True, True, False, False, True, False])
    low, accept = calibrate_thresholds(s, t, recall=0.8, precision=0.95)
    assert low == 0.85  # 5 of the 6 pairs are at 0.85 or more
    assert accept == 0.95  # above 0.93 the pairs are all right; at 0.93 precision is 3/4
    assert calibrate_thresholds(s, t, recall=1.0, precision=1.01) == (0.7, None)
    with pytest.raises(ValueError, match="no full-model pair"):
        calibrate_thresholds(s, np.zeros(10, dtype=bool))


def test_rescore_plan_sure_first_spends_the_budget_on_the_most_similar_pairs_sure_ones_included():
    # (0,1) .99 and (2,3) .98 are sure, (4,5) .9 and (6,7) .8 open; budget 4 contents
    a, b = np.array([0, 2, 4, 6]), np.array([1, 3, 5, 7])
    sim = np.array([0.99, 0.98, 0.9, 0.8], dtype=np.float32)
    plan = rescore_plan(8, a, b, sim, budget=4, accept=0.97, sure_first=True)
    assert plan.rescore.tolist() == [0, 1, 2, 3] and len(plan.static_only) == 0 and len(plan.accept_a) == 0
    # budget 3: the sure pair (2,3) is reached at one end only; what is left of it is decided statically
    plan = rescore_plan(8, a, b, sim, budget=3, accept=0.97, sure_first=True)
    assert plan.rescore.tolist() == [0, 1, 2] and plan.static_only.tolist() == [3]
    assert (plan.accept_a.tolist(), plan.accept_b.tolist()) == ([2], [3])
    cov = plan.coverage(3, 0.97)
    assert (cov["rescored"], cov["static_only"], cov["not_compared"]) == (3, 1, 4)


def test_pair_similarity_in_chunks_equals_the_whole_gather():
    from integrity.analysis.semantic_candidates import pair_similarity

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    a, b = rng.integers(0, 50, 101), rng.integers(0, 50, 101)
    whole = np.einsum("ij,ij->i", x[a], x[b])
    np.testing.assert_allclose(pair_similarity(x, a, b, chunk=7), whole, rtol=1e-6)
    assert pair_similarity(x, a[:0], b[:0]).shape == (0,)
