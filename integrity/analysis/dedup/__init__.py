"""Shared machinery of the dedup checks (near, span, exact across nights) and of
checks that reuse their features (semantic dedup, memorization risk,
contamination):

* :mod:`integrity.analysis.dedup.text` – vectorized word tokenization with character
  offsets and stable 64-bit token, shingle and window hashes (NumPy only, no
  per-token Python);
* :mod:`integrity.analysis.dedup.minhash` – MinHash signatures, LSH band keys and
  Jaccard estimates;
* :mod:`integrity.analysis.dedup.kernel` – ``dedup.near``'s features in one compiled
  (numba) pass per record over the Arrow string buffers, the band join's pairs and the
  sketch comparisons: the same values as the NumPy code above, faster;
* :mod:`integrity.analysis.dedup.graph` – candidate pairs from equal keys and connected
  components (``scipy.sparse.csgraph``);
* :mod:`integrity.analysis.history` – the persistent index of approved content.
"""
