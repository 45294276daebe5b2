"""Numeric helpers of ``poison.outlier``'s corpus pass (:mod:`integrity.checks.poison_outlier`):
standardized style space, exact k-nearest neighbours (faiss), a deterministic record sample,
out-of-fold posteriors of a gradient-boosted classifier, and the embedding evidence (cohesion,
spectral-signature percentiles). Pure: no check, engine or report.
"""
from __future__ import annotations

import numpy as np

def standardize(F: np.ndarray) -> np.ndarray:
    """Continuous columns to clipped z-scores, 0/1 columns kept; NaN -> column median."""
    F = F.astype(np.float32, copy=True)
    for j in range(F.shape[1]):
        col = F[:, j]
        nan = np.isnan(col)
        if nan.any():
            col[nan] = np.nanmedian(col) if (~nan).any() else 0.0
    binary = np.all((F == 0) | (F == 1), axis=0)
    mu, sd = F.mean(0), F.std(0) + 1e-6
    Z = np.where(binary, F, np.clip((F - mu) / sd, -5, 5))
    return np.ascontiguousarray(Z, dtype=np.float32)


def knn(index_vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    d = index_vectors.shape[1]
    index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(index_vectors, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def sample_mask(keys: list[str], cap: int, seed: int) -> np.ndarray:
    from integrity.analysis.embeddings import budget_order

    mask = np.zeros(len(keys), dtype=bool)
    mask[budget_order(keys, cap, seed)] = True
    return mask


def oof_posterior(F: np.ndarray, y: np.ndarray, folds: int, seed: int, cap: int) -> np.ndarray:
    """Out-of-fold P(y=1 | F) from a gradient-boosted classifier (one thread: it is small and
    oversubscribed threads are much slower on a shared machine)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    n = len(y)
    p = np.zeros(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    train_pool = np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))
    folds = max(2, min(folds, int(y[train_pool].sum()), int((1 - y[train_pool]).sum())))
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    assigned = np.zeros(n, dtype=bool)
    with threadpool_limits(1):
        for train, test in skf.split(train_pool, y[train_pool]):
            clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
            clf.fit(F[train_pool[train]], y[train_pool[train]])
            p[train_pool[test]] = clf.predict_proba(F[train_pool[test]])[:, 1]
            assigned[train_pool[test]] = True
            last = clf
        if not assigned.all():  # records outside the training sample: the last fold's model
            rest = ~assigned
            p[rest] = last.predict_proba(F[rest])[:, 1]
    return p


def cohesion(X: np.ndarray) -> float:
    """Mean cosine similarity of L2-normalized rows to their normalized centroid."""
    c = X.mean(0)
    c /= np.linalg.norm(c) + 1e-12
    return float((X @ c).mean())


def spectral_percentiles(X: np.ndarray) -> np.ndarray:
    """Percentile (0-1) of each row's |projection| on the top singular vector of centered X."""
    Xc = X - X.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    proj = np.abs(Xc @ vt[0])
    ranks = proj.argsort().argsort()
    return ranks / max(len(proj) - 1, 1)
