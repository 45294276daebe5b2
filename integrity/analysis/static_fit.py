"""Fit a static embedding model to the full model's sentence embeddings (tokenlearn style).

A distilled static model (:mod:`integrity.analysis.static_embeddings`) knows each token only
alone (``[CLS] token [SEP]`` through MiniLM), so its mean-pooled text vectors track MiniLM's
loosely: on the Debian descriptions, keeping 95 % of MiniLM's pairs at 0.85 takes about 3.4
candidate pairs per true pair. Fitting the token vectors to MiniLM's embeddings of real texts
of the corpus (what model2vec's ``tokenlearn`` does on C4) halves that
(``benchmarks/semantic.py --fit``).

:func:`fit_token_table`, on texts and their full-model vectors:

1. a ridge map ``W`` from mean-pooled static vectors to the (centred) full-model vectors, so
   every token, seen or not, moves into the full model's space (a linear map of a mean is the
   mean of the mapped token vectors);
2. a few epochs of full-batch Adam on the vectors of the tokens the texts contain, so that
   each text's mean-pooled vector points where the full model's does (cosine loss on centred
   vectors: the check compares static vectors with the corpus mean taken out), pulled towards
   their mapped start (``reg``) because a sample of a few thousand texts sees each token a few
   times only.

:func:`fit_static_model` embeds the texts with the full model, fits on most of them, calibrates
the check's ``static_threshold`` / ``static_accept`` on the rest (:func:`calibrate`, stored in
the model's ``config.json``), and saves a model2vec model that ``dedup.semantic`` takes as
``static_model: DIR``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from integrity.analysis.embeddings import DEFAULT_MODEL

log = logging.getLogger(__name__)


def token_counts(model: Any, texts: Sequence[str], max_tokens: int = 256):
    """CSR ``(texts, vocab)`` share of each token in each text's first ``max_tokens`` tokens
    (rows sum to 1; the unknown token is left out, as in :func:`integrity.analysis.static_embeddings.encode_static`)."""
    import scipy.sparse as sp

    from integrity.analysis.static_embeddings import _untruncated, token_table

    vocab = token_table(model).shape[0]
    unk = getattr(model, "unk_token_id", None)
    encs = _untruncated(model).encode_batch_fast([t or "" for t in texts], add_special_tokens=False)
    rows, cols = [], []
    for i, enc in enumerate(encs):
        ids = np.asarray(enc.ids, dtype=np.int64)
        if unk is not None:
            ids = ids[ids != unk]
        ids = ids[:max_tokens]
        rows.append(np.full(len(ids), i, dtype=np.int64))
        cols.append(ids)
    r, c = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, np.int64),) * 2
    m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(texts), vocab))
    m.sum_duplicates()
    per = np.maximum(np.asarray(m.sum(axis=1)).ravel(), 1.0)
    return (sp.diags((1.0 / per).astype(np.float32)) @ m).tocsr().astype(np.float32)


def fit_token_table(model: Any, texts: Sequence[str], targets: np.ndarray, epochs: int = 150,
                    lr: float = 1e-3, reg: float = 1e-2, ridge: float = 1e-2, max_tokens: int = 256,
                    seed: int = 0) -> np.ndarray:
    """float32 ``(vocab, target dim)`` token table whose mean-pooled text vectors track ``targets``
    (the full model's vectors of ``texts``): a ridge map of the whole table, then Adam on the
    tokens the texts contain (see the module docstring)."""
    import torch

    from integrity.analysis.static_embeddings import token_table

    table = token_table(model)
    y = np.asarray(targets, dtype=np.float32)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    share = token_counts(model, texts, max_tokens)
    used = np.flatnonzero(np.asarray(share.sum(axis=0)).ravel() > 0)
    sub = share[:, used].tocoo()
    pooled = np.asarray(share @ table, dtype=np.float64)
    a_c, y_c = pooled - pooled.mean(axis=0), y - y.mean(axis=0)
    gram = a_c.T @ a_c
    lam = ridge * np.trace(gram) / gram.shape[0]  # relative: the table's scale does not matter
    w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), a_c.T @ y_c).astype(np.float32)
    out = table @ w  # every token in the target space (unseen ones keep the linear map)
    if epochs <= 0 or len(used) == 0:
        return out
    torch.manual_seed(seed)
    m = torch.sparse_coo_tensor(np.vstack([sub.row, sub.col]), sub.data, sub.shape,
                                check_invariants=True).coalesce()
    start = torch.from_numpy(out[used].copy())
    p = start.clone().requires_grad_(True)
    target = torch.from_numpy(y_c.astype(np.float32))
    scale = float((start ** 2).sum(dim=1).mean()) or 1.0
    opt = torch.optim.Adam([p], lr=lr)
    t0 = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        pred = torch.sparse.mm(m, p)
        pred = pred - pred.mean(dim=0)
        loss = (1 - torch.nn.functional.cosine_similarity(pred, target)).mean()
        loss = loss + reg * ((p - start) ** 2).sum(dim=1).mean() / scale
        loss.backward()
        opt.step()
    log.info("static fit: %d texts, %d tokens, %d epochs in %.1fs, loss %.4f", len(texts), len(used), epochs,
             time.perf_counter() - t0, float(loss.detach()))
    out[used] = p.detach().numpy()
    return out


def fit_static_model(out_dir: str | os.PathLike, texts: Sequence[str], model: Any = None,
                     targets: np.ndarray | None = None, source: str | os.PathLike = DEFAULT_MODEL,
                     max_seq_length: int = 128, holdout: float = 0.25, threshold: float = 0.85,
                     **fit: Any) -> Path:
    """Fit a static model to ``source``'s embeddings of ``texts`` (a sample of the corpus to scan)
    and save it in model2vec's format at ``out_dir`` (for ``static_model: DIR``).

    ``model``: the static model to start from (default: the one distilled from ``source``,
    built once per machine); ``targets``: ``source``'s vectors of ``texts`` when already known
    (else embedded here, at ``max_seq_length`` tokens: ~30 texts per CPU-second with MiniLM).

    A ``holdout`` share of the texts (a fixed random draw) is kept out of the fit and calibrates
    the fitted model for the check (:func:`calibrate`): ``config.json``'s ``calibration`` holds
    the ``static_threshold`` (0.95 recall) and ``static_accept`` (0.95 precision) of full-model
    pairs at ``threshold`` -- thresholds calibrated on the fit's own texts keep less recall on others."""
    from model2vec import StaticModel

    from integrity.analysis.static_embeddings import RECIPE_VERSION, static_model, user_cache_dir

    texts = [t or "" for t in texts]
    if model is None:
        model = static_model(None, user_cache_dir(), source=source)
    if targets is None:
        from integrity.analysis.embeddings import TextEmbedder

        targets = TextEmbedder(model=str(source), max_seq_length=max_seq_length).encode(texts)
    targets = np.asarray(targets, dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(texts))
    cut = int(round(len(texts) * holdout))
    held, used = np.sort(order[:cut]), np.sort(order[cut:])
    table = fit_token_table(model, [texts[i] for i in used], targets[used], **fit)
    config = dict(getattr(model, "config", {}) or {})
    config.update(hidden_dim=int(table.shape[1]), normalize=True,
                  fitted_by=f"integrity.analysis.static_fit v{RECIPE_VERSION} on {len(used)} texts")
    fitted = StaticModel(vectors=table, tokenizer=model.tokenizer, config=config, normalize=True,
                         base_model_name=getattr(model, "base_model_name", None))
    if len(held) >= 2:
        config["calibration"] = calibrate(fitted, [texts[i] for i in held], targets[held], threshold,
                                          max_seq_length)
        fitted.config = config
    out = Path(out_dir)
    fitted.save_pretrained(out)
    return out


def calibrate(model: Any, texts: Sequence[str], targets: np.ndarray, threshold: float = 0.85,
              max_tokens: int = 128) -> dict[str, Any]:
    """``static_threshold`` and ``static_accept`` of ``model`` for ``dedup.semantic``, from the pairs of
    ``texts`` (not the fit's) that the full model (``targets``) puts at ``threshold`` or more; the
    reason instead when there are too few such pairs (fewer than 10) to calibrate on. The static
    vectors are compared as the check compares them, with the mean of ``texts`` taken out."""
    from integrity.analysis.semantic_candidates import calibrate_thresholds, static_unit
    from integrity.analysis.static_embeddings import encode_static

    y = np.asarray(targets, dtype=np.float32)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    x = static_unit(encode_static(model, list(texts), max_tokens=max_tokens))
    iu = np.triu_indices(len(y), 1)
    is_pair = (y @ y.T)[iu] >= threshold
    out: dict[str, Any] = {"threshold": threshold, "texts": len(y), "pairs": int(is_pair.sum())}
    if out["pairs"] < 10:
        out["note"] = f"only {out['pairs']} full-model pairs among the held-out texts: not calibrated"
        return out
    low, accept = calibrate_thresholds((x @ x.T)[iu], is_pair)
    out.update(static_threshold=round(low, 4), static_accept=None if accept is None else round(accept, 4))
    return out


__all__ = ["token_counts", "fit_token_table", "fit_static_model", "calibrate"]
