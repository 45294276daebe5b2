"""Shared machinery of the dedup checks (near, span, exact across nights) and of
checks that reuse their features (semantic dedup, memorization risk,
contamination):

* :mod:`integrity.dedup.text` – vectorized word tokenization with character
  offsets and stable 64-bit token, shingle and window hashes (NumPy only, no
  per-token Python);
* :mod:`integrity.dedup.minhash` – MinHash signatures, LSH band keys and
  Jaccard estimates;
* :mod:`integrity.dedup.graph` – candidate pairs from equal keys and connected
  components (``scipy.sparse.csgraph``);
* :mod:`integrity.history` – the persistent index of approved content.
"""
