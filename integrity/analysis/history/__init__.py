"""The persistent dedup history: compact keys of everything approved so far.

Tonight's shards are compared with every earlier night through this index, at
a cost in proportion to tonight's data: lookups are binary searches in
memory-mapped sorted key arrays, so only the pages holding matching keys are
read, whatever the size of the history.

Layout under ``STATE_DIR/dedup_history/``::

    manifest.json                     segments, dropped content (atomically replaced)
    .lock                             flock: shared for lookups, exclusive for changes
    segments/<kind>/<segment id>/
        records.arrow                 one row per record: record_id, row, shard_no (Arrow IPC, memory-mapped)
        keys.npy, key_rows.npy        sorted uint64 keys and the record row of each (memory-mapped)
        payload_<name>.npy            per-record arrays, row-aligned (e.g. shingle counts)
        payload_<name>.values.npy     ragged per-record arrays (e.g. bottom-k sketches):
        payload_<name>.offsets.npy    record i holds values[offsets[i]:offsets[i+1]]

A *kind* is one family of keys (``exact``: 128-bit text hashes, ``near``: MinHash
band keys + bottom-k sketches, ``span``: winnowed 50-token window hashes; other
checks may add their own, e.g. embeddings as a payload without keys). Segments
carry the parameters their keys were made with; a lookup only uses segments
made with the caller's parameters, so changing e.g. the number of permutations
in the policy starts a fresh history for that kind instead of comparing
incomparable keys.

One segment is written per scan and kind, holding the shards the scan approved
(pass or warn). Records of one shard are contiguous, so excluding content is
excluding row ranges:

* content quarantined now according to the ledger, or dropped with
  :meth:`HistoryIndex.drop` (e.g. a shard approved earlier and quarantined
  later), is never matched; dropped rows are removed physically at the next
  compaction;
* content that is part of tonight's scan itself (same SHA-256: a shard scanned
  again) is not matched against itself, and is not added twice;
* a record matching its own earlier version (same shard name and record id,
  e.g. a shard appended to since) is not a duplicate of it
  (:func:`own_earlier_version`).

Segments are merged log-structured style (a new segment is merged into its
predecessor while that one is at most twice its size), which keeps O(log N)
segments and amortized O(log N) rewriting per record, up to
:data:`MAX_MERGED_RECORDS` per segment (a merge holds its segments in memory).
"""
from integrity.analysis.history.index import DIRNAME, MAX_MERGED_RECORDS, MERGE_FACTOR, HistoryIndex
from integrity.analysis.history.scan import (approved_content, drop_rejected, excluded_content, node_identities,
                                            own_earlier_version, seen_order)
from integrity.analysis.history.segments import Hits, Segment, take_ragged
from integrity.analysis.history.writing import ragged_chunks, sort_record_keys

__all__ = ["DIRNAME", "MAX_MERGED_RECORDS", "MERGE_FACTOR", "HistoryIndex", "Hits", "Segment", "approved_content",
           "drop_rejected", "excluded_content", "node_identities", "own_earlier_version", "ragged_chunks", "seen_order",
           "sort_record_keys", "take_ragged"]
