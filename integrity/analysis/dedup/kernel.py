"""``dedup.near``'s per-batch features in one compiled pass per record (numba).

The NumPy path (:func:`~integrity.analysis.dedup.text.tokenize`,
:func:`~integrity.analysis.dedup.text.shingles`,
:meth:`~integrity.analysis.dedup.minhash.MinHasher.signatures`,
:func:`~integrity.analysis.dedup.minhash.bottom_k`) makes a dozen passes over
per-character and per-shingle uint64 arrays of a whole batch; this kernel reads
the Arrow string buffers (offsets + UTF-8 bytes, no Python string per record)
and, record by record, decodes, tokenizes, shingles, MinHashes and keeps the
bottom-k sketch while the record's bytes and shingles are in cache. It computes
the very same values (same tokens, hashes, permutations and sketches: the tests
compare both paths on real text); the NumPy path stays the reference and the
fallback when numba is not installed.

:func:`sketch_jaccard_pairs` verifies candidate pairs by merging the two sorted
bottom-k sketches of each pair (the same union / intersection below the
smaller truncation point as :func:`~integrity.analysis.dedup.minhash.sketch_jaccard`).

The only difference from the NumPy tokenizer: it cuts a single text longer than
1,000,000 characters into pieces, so a token longer than 500,000 characters
there counts as two; the kernel never cuts.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

try:  # numba is a dependency; without it the NumPy path runs (same values, slower)
    from numba import njit
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        return (lambda f: f) if not args or not callable(args[0]) else args[0]

from integrity.analysis.dedup.text import _C, _M, _P, _char_tables
from integrity.analysis.sorting import insertion_sort

_U = np.uint64
_SENT = np.uint32(0xFFFFFFFF)
_LOW32 = _U(0xFFFFFFFF)
_S32 = _U(32)
_S33 = _U(33)
_F1 = _U(0xFF51AFD7ED558CCD)
_F2 = _U(0xC4CEB9FE1A85EC53)
_KP = _U(int(_P))
_KC = _U(int(_C))
_KM = _U(_M)


@njit(cache=True, inline="always")
def _fmix(x):
    x ^= x >> _S33
    x *= _F1
    x ^= x >> _S33
    x *= _F2
    x ^= x >> _S33
    return x


@njit(cache=True)
def _tokens_of(data, s, e, word, lower, tok, nt):
    """Write the token hashes of the UTF-8 bytes ``data[s:e]`` to ``tok[nt:]`` and return the
    new count. The caller guarantees room for ``(e - s + 1) // 2`` more (a token takes at
    least one byte and is followed by a separator or the end): growing ``tok`` in here, an
    array reassigned and returned per call, made this loop ten times slower."""
    p = s
    acc = _U(0)
    pw = _U(1)
    ln = 0
    while p < e:
        b0 = np.int64(data[p])
        if b0 < 0x80:
            cp = b0
            p += 1
        elif b0 < 0xE0:
            cp = ((b0 & 0x1F) << 6) | (np.int64(data[p + 1]) & 0x3F)
            p += 2
        elif b0 < 0xF0:
            cp = ((b0 & 0x0F) << 12) | ((np.int64(data[p + 1]) & 0x3F) << 6) | (np.int64(data[p + 2]) & 0x3F)
            p += 3
        else:
            cp = (((b0 & 0x07) << 18) | ((np.int64(data[p + 1]) & 0x3F) << 12)
                  | ((np.int64(data[p + 2]) & 0x3F) << 6) | (np.int64(data[p + 3]) & 0x3F))
            p += 4
        if word[cp]:
            acc += _U(lower[cp]) * pw
            pw *= _KP
            ln += 1
        elif ln:
            tok[nt] = _fmix(acc ^ (_U(ln) * _KC))
            nt += 1
            acc = _U(0)
            pw = _U(1)
            ln = 0
    if ln:
        tok[nt] = _fmix(acc ^ (_U(ln) * _KC))
        nt += 1
    return nt


@njit(cache=True)
def _sort_u32(x, tmp, n, counts):
    """``x[:n]`` sorted ascending, in ``x`` or ``tmp`` (the array returned): insertion for a few
    values, else an LSD radix sort on the four bytes (one counting pass for all four; a
    byte every value shares is skipped). A record's ~70 shingle values sort about twice
    as fast as with numba's quicksort."""
    if n <= 32:
        insertion_sort(x, 0, n)
        return x
    counts[:, :] = 0
    for i in range(n):
        v = np.int64(x[i])
        counts[0, v & 255] += 1
        counts[1, (v >> 8) & 255] += 1
        counts[2, (v >> 16) & 255] += 1
        counts[3, (v >> 24) & 255] += 1
    src = x
    dst = tmp
    for d in range(4):
        sh = 8 * d
        if counts[d, (np.int64(src[0]) >> sh) & 255] == n:
            continue
        total = 0
        for b in range(256):
            c = counts[d, b]
            counts[d, b] = total
            total += c
        for i in range(n):
            v = src[i]
            b = (np.int64(v) >> sh) & 255
            dst[counts[d, b]] = v
            counts[d, b] += 1
        src, dst = dst, src
    return src


@njit(cache=True)
def _min_hashes(xs, n, a, b, row):
    """``row[i] = min over s < n of (a[i] * xs[s] + b[i]) >> 32`` (32-bit MinHash values).
    Four shingles a pass over ``row``: the loop over the permutations vectorizes, and ``row``
    is loaded and stored a quarter as often (2.8x faster than one shingle a pass)."""
    perms = a.shape[0]
    for i in range(perms):
        row[i] = _LOW32
    s = 0
    while s + 4 <= n:
        x0 = xs[s]
        x1 = xs[s + 1]
        x2 = xs[s + 2]
        x3 = xs[s + 3]
        for i in range(perms):
            ai = a[i]
            bi = b[i]
            v = min(min((ai * x0 + bi) >> _S32, (ai * x1 + bi) >> _S32),
                    min((ai * x2 + bi) >> _S32, (ai * x3 + bi) >> _S32))
            row[i] = min(row[i], v)
        s += 4
    while s < n:
        x = xs[s]
        for i in range(perms):
            row[i] = min(row[i], (a[i] * x + b[i]) >> _S32)
        s += 1


@njit(cache=True)
def _near_batch(data, seg_start, seg_end, nf, word, lower, ngram, min_tokens, a, b, k):
    """Per record (``nf`` byte segments each): MinHash signature, bottom-k sketch and
    distinct shingle count of its word ``ngram``-gram shingles. Returns (docs, sig,
    values, offsets, nsh) for the records with at least one shingle."""
    n = seg_start.shape[0] // nf
    perms = a.shape[0]
    docs = np.empty(n, dtype=np.int64)
    sig = np.empty((n, perms), dtype=np.uint32)
    values = np.empty(n * k, dtype=np.uint32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    nsh = np.empty(n, dtype=np.int32)
    tok = np.empty(4096, dtype=np.uint64)
    fold = np.empty(4096, dtype=np.uint32)
    spare = np.empty(4096, dtype=np.uint32)  # the radix sort's other buffer
    counts = np.zeros((4, 256), dtype=np.int64)
    row = np.empty(perms, dtype=np.uint64)
    xs = np.empty(4096, dtype=np.uint64)  # a record's shingle hashes
    out = 0
    nv = 0
    for r in range(n):
        room = 0
        for f in range(nf):
            i = r * nf + f
            if seg_end[i] > seg_start[i]:
                room += (seg_end[i] - seg_start[i] + 1) // 2
        if tok.shape[0] < room:
            tok = np.empty(max(room, 2 * tok.shape[0]), dtype=np.uint64)
        nt = 0
        for f in range(nf):
            i = r * nf + f
            if seg_end[i] > seg_start[i]:
                nt = _tokens_of(data, seg_start[i], seg_end[i], word, lower, tok, nt)
        if nt == 0 or nt < min_tokens:
            continue
        w = ngram if nt >= ngram else nt
        nsg = nt - w + 1
        if fold.shape[0] < nsg:
            fold = np.empty(max(nsg, 2 * fold.shape[0]), dtype=np.uint32)
            spare = np.empty(fold.shape[0], dtype=np.uint32)
        if xs.shape[0] < nsg:
            xs = np.empty(max(nsg, 2 * xs.shape[0]), dtype=np.uint64)
        for s in range(nsg):
            h = _U(0)
            for t in range(s, s + w):
                h = h * _KM + tok[t]
            h = _fmix(h)
            x = (h ^ (h >> _S32)) & _LOW32
            xs[s] = x
            fold[s] = np.uint32(x) if x < _LOW32 else np.uint32(0xFFFFFFFE)
        _min_hashes(xs, nsg, a, b, row)
        for i in range(perms):
            sig[out, i] = np.uint32(row[i])
        srt = _sort_u32(fold, spare, nsg, counts)
        distinct = 0
        for s in range(nsg):
            if s == 0 or srt[s] != srt[s - 1]:
                if distinct < k:
                    values[nv] = srt[s]
                    nv += 1
                distinct += 1
        docs[out] = r
        nsh[out] = distinct
        offsets[out + 1] = nv
        out += 1
    return docs[:out], sig[:out], values[:nv].copy(), offsets[:out + 1].copy(), nsh[:out]


_GOLDEN = _U(0x9E3779B97F4A7C15)  # the band keys' multiplier and the bucket keys' band mix
_BAND_SEED = _U(0x2545F4914F6CDD1D)


@njit(cache=True)
def _band_keys(sig, bands, rows):
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for r in range(n):
        for j in range(bands):
            k = _U(j + 1) * _BAND_SEED
            for c in range(j * rows, (j + 1) * rows):
                k ^= _U(sig[r, c])
                k *= _GOLDEN
                k = _fmix(k)
            keys[r, j] = k
    return keys


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray | None:
    """:meth:`~integrity.analysis.dedup.minhash.MinHasher.band_keys` compiled (the same
    values, one pass per record instead of a NumPy pass per band and row); None without numba."""
    if not HAVE_NUMBA:
        return None
    return _band_keys(np.ascontiguousarray(sig, dtype=np.uint32), int(bands), int(rows))


@njit(cache=True)
def _routed_entries(bands, first, partitions):
    n = bands.shape[0]
    nb = bands.shape[1]
    total = n * nb
    part = np.empty(total, dtype=np.int64)
    keys = np.empty(total, dtype=np.uint64)
    counts = np.zeros(partitions + 1, dtype=np.int64)
    p_u = _U(partitions)
    e = 0
    for r in range(n):
        for j in range(nb):
            x = _fmix(bands[r, j] ^ (_U(j + 1) * _GOLDEN))
            keys[e] = x
            q = np.int64(x % p_u)
            part[e] = q
            counts[q + 1] += 1
            e += 1
    for q in range(partitions):
        counts[q + 1] += counts[q]
    fill = counts[:-1].copy()
    out = np.empty(2 * total, dtype=np.uint64)  # (bucket, record) pairs, interleaved like ENTRY
    e = 0
    for r in range(n):
        rec = _U(first + r)
        for j in range(nb):
            q = part[e]
            at = fill[q]
            out[2 * at] = keys[e]
            out[2 * at + 1] = rec
            fill[q] = at + 1
            e += 1
    return out, counts


def routed_entries(first: int, bands: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray] | None:
    """One shard's band-join entries (bucket key, record) grouped by hash partition, in one
    compiled pass: the flat uint64 array (bucket, record, bucket, record, ...) in the order of
    :func:`~integrity.analysis.dedup.partitioned._route` (stable: records ascending inside a
    partition) and the partitions' bounds (``partitions + 1``, in entries). The same entries
    as :func:`~integrity.analysis.dedup.partitioned.bucket_keys` and ``_route``; None without
    numba."""
    if not HAVE_NUMBA:
        return None
    return _routed_entries(np.ascontiguousarray(bands, dtype=np.uint64), int(first), int(partitions))


@njit(cache=True)
def _jaccard_pairs(va, oa, na, vb, ob, nb, i, j, k):
    out = np.empty(i.shape[0], dtype=np.float64)
    for p in range(i.shape[0]):
        x, y = i[p], j[p]
        a0, a1 = oa[x], oa[x + 1]
        b0, b1 = ob[y], ob[y + 1]
        tau = _SENT
        if na[x] > k:
            tau = va[a0 + k - 1]
        if nb[y] > k and vb[b0 + k - 1] < tau:
            tau = vb[b0 + k - 1]
        union = 0
        inter = 0
        while a0 < a1 or b0 < b1:
            if b0 >= b1 or (a0 < a1 and va[a0] < vb[b0]):
                v = va[a0]
                a0 += 1
            elif a0 >= a1 or vb[b0] < va[a0]:
                v = vb[b0]
                b0 += 1
            else:
                v = va[a0]
                a0 += 1
                b0 += 1
                if v <= tau and v != _SENT:
                    inter += 1
            if v > tau:
                break
            if v != _SENT:
                union += 1
        out[p] = inter / union if union > 0 else 0.0
    return out


@njit(cache=True)
def _bucket_pair_codes(keys, items, chain, bits, m):
    """``lo * m + hi`` of the star (+ chain) pairs of items sharing a key; ``items`` ascending.

    Entries are first scattered by the top ``bits`` of their key (a stable counting sort:
    items stay ascending inside a bin), then each bin's keys are grouped by a small
    open-addressing table that fits in cache, remembering each key's first and last item:
    linear in the entries, with no global sort."""
    n = keys.shape[0]
    nbins = 1 << bits
    shift = np.uint64(64 - bits)
    start = np.zeros(nbins + 1, dtype=np.int64)
    if bits > 0:
        for e in range(n):
            start[np.int64(keys[e] >> shift) + 1] += 1
        for b in range(nbins):
            start[b + 1] += start[b]
    else:
        start[1] = n
    # the entries themselves are scattered (not a permutation of them), so the grouping pass
    # below reads them in order instead of one cache miss per entry
    s_key = np.empty(n, dtype=np.uint64)
    s_item = np.empty(n, dtype=np.int64)
    if bits > 0:
        fill = start[:-1].copy()
        for e in range(n):
            b = np.int64(keys[e] >> shift)
            p = fill[b]
            s_key[p] = keys[e]
            s_item[p] = items[e]
            fill[b] = p + 1
    else:
        s_key[:] = keys
        s_item[:] = items
    biggest = 1
    for b in range(nbins):
        biggest = max(biggest, start[b + 1] - start[b])
    size = 1
    while size < 2 * biggest:
        size *= 2
    mask = np.uint64(size - 1)
    t_key = np.empty(size, dtype=np.uint64)
    t_first = np.empty(size, dtype=np.int64)
    t_last = np.empty(size, dtype=np.int64)
    used = np.zeros(size, dtype=np.bool_)
    slots = np.empty(biggest, dtype=np.int64)
    out = np.empty(2 * n if chain else n, dtype=np.int64)
    no = 0
    for b in range(nbins):
        nslots = 0
        for q in range(start[b], start[b + 1]):
            k = s_key[q]
            it = s_item[q]
            h = (k ^ (k >> np.uint64(29))) & mask
            while used[h] and t_key[h] != k:
                h = (h + np.uint64(1)) & mask
            if not used[h]:
                used[h] = True
                t_key[h] = k
                t_first[h] = it
                t_last[h] = it
                slots[nslots] = np.int64(h)
                nslots += 1
                continue
            f = t_first[h]
            if f != it:
                out[no] = min(f, it) * m + max(f, it)
                no += 1
            last = t_last[h]
            if chain and last != f and last != it:
                out[no] = min(last, it) * m + max(last, it)
                no += 1
            t_last[h] = it
        for s in range(nslots):
            used[slots[s]] = False
    return out[:no]


def bucket_pair_codes(keys: np.ndarray, items: np.ndarray, chain: bool, m: int | None = None) -> tuple[np.ndarray, int]:
    """Codes ``lo * m + hi`` (not yet unique) of the pairs of :func:`~integrity.analysis.dedup.graph.bucket_pairs`
    and ``m`` (the largest item + 1 unless given), for ``items`` in ascending order (compiled;
    requires numba)."""
    # strided views (a field of the band join's entries) are read in place, not copied
    keys = keys if keys.dtype == np.uint64 else keys.astype(np.uint64)
    items = items if items.dtype == np.int64 else items.astype(np.int64)
    if m is None:
        m = int(items.max()) + 1 if len(items) else 1
    bits = max(0, min(20, int(np.ceil(np.log2(max(len(keys), 1) / 1024)))))
    return _bucket_pair_codes(keys, items, bool(chain), bits, m), m


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data bytes, start, end) byte offsets per value of a string array; nulls are empty."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):  # string_view
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.fill_null("")
    _, off_buf, data_buf = arr.buffers()[:3]
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offs = np.frombuffer(off_buf, dtype=width)[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offs[:-1], offs[1:]


def text_columns(batch: pa.RecordBatch | pa.Table, names: tuple[str, ...]) -> tuple[np.ndarray, ...] | None:
    """The byte buffers of the text fields ``names`` as (data, seg_start, seg_end) with one
    segment per (record, field), record-major; None when a field is not a string column."""
    datas, starts, ends, base = [], [], [], 0
    for name in names:
        col = batch.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                or pa.types.is_string_view(col.type)):
            return None
        d, s, e = _string_buffers(col)
        datas.append(d)
        starts.append(s + base)
        ends.append(e + base)
        base += len(d)
    data = datas[0] if len(datas) == 1 else np.concatenate(datas)
    return data, np.stack(starts, axis=1).ravel(), np.stack(ends, axis=1).ravel()


def near_features(batch: pa.RecordBatch | pa.Table, names: tuple[str, ...], ngram: int, min_tokens: int,
                  params: tuple[np.ndarray, np.ndarray], k: int):
    """(docs, signatures, sketch values, sketch offsets, distinct shingles) of the records of
    ``batch`` whose fields ``names`` hold at least one shingle; None when the kernel cannot
    run (numba missing, or a field that is not a string column)."""
    if not HAVE_NUMBA:
        return None
    cols = text_columns(batch, names)
    if cols is None:
        return None
    word, lower = _char_tables()
    a, b = params
    return _near_batch(cols[0], cols[1], cols[2], len(names), word, lower, int(ngram), int(min_tokens), a, b, int(k))


def sketch_jaccard_pairs(values: np.ndarray, offsets: np.ndarray, nsh: np.ndarray, i: np.ndarray, j: np.ndarray,
                         k: int, other: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Jaccard of sketch ``i`` and sketch ``j`` (of ``other``), merged pair by pair (numba)."""
    ov, oo, on = other if other is not None else (values, offsets, nsh)
    return _jaccard_pairs(np.asarray(values, np.uint32), np.asarray(offsets, np.int64), np.asarray(nsh, np.int64), np.asarray(ov, np.uint32),
                          np.asarray(oo, np.int64), np.asarray(on, np.int64), np.asarray(i, np.int64),
                          np.asarray(j, np.int64), int(k))


@njit(cache=True)
def _sorted_by_owner_start(owner, start):
    """Whether (owner, start) is already ascending: the order fingerprints come in."""
    for i in range(1, owner.shape[0]):
        if owner[i] < owner[i - 1] or (owner[i] == owner[i - 1] and start[i] < start[i - 1]):
            return False
    return True


@njit(cache=True)
def _merge_sorted_intervals(owner, start, end):
    """Union of intervals per owner for input ascending by (owner, start): the merged (owner,
    start, end). Two passes (count, then fill): no sorted copies of the input, and outputs of
    the merged size only."""
    n = owner.shape[0]
    m = 0
    reach = 0
    for i in range(n):
        if m == 0 or owner[i] != owner[i - 1] or start[i] > reach:
            m += 1
            reach = end[i]
        elif end[i] > reach:
            reach = end[i]
    o_out = np.empty(m, dtype=np.int64)
    s_out = np.empty(m, dtype=np.int64)
    e_out = np.empty(m, dtype=np.int64)
    k = -1
    for i in range(n):
        if k < 0 or owner[i] != o_out[k] or start[i] > e_out[k]:
            k += 1
            o_out[k] = owner[i]
            s_out[k] = start[i]
            e_out[k] = end[i]
        elif end[i] > e_out[k]:
            e_out[k] = end[i]
    return o_out, s_out, e_out


def merge_sorted_intervals(owner: np.ndarray, start: np.ndarray, end: np.ndarray):
    """:func:`_merge_sorted_intervals` when numba is installed and the input is ascending by
    (owner, start); else None (the caller sorts)."""
    if not HAVE_NUMBA or len(owner) == 0 or not _sorted_by_owner_start(owner, start):
        return None
    return _merge_sorted_intervals(owner, start, end)


@njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@njit(cache=True)
def component_labels(n, a, b):
    """Connected-component label of each of ``n`` nodes given undirected edges ``(a, b)``, as
    scipy's ``connected_components`` numbers them (components in order of their smallest node):
    a union-find whose roots are the smallest node of their set, one int64 per node (scipy
    builds a sparse matrix of the edges first)."""
    parent = np.arange(n)
    for e in range(a.shape[0]):
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    for i in range(n):  # every node straight to its root (the smallest node of its set)
        parent[i] = _find(parent, i)
    labels = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):  # a root comes before the rest of its set: labelled first
        if parent[i] == i:
            labels[i] = k
            k += 1
        else:
            labels[i] = labels[parent[i]]
    return labels
