"""Per-record findings carry the row index in their detail (records may share an id)."""
import polars as pl
import pyarrow as pa

from integrity.engine.shard import with_rows


def test_row_is_added_to_details_and_repeated_ids_get_every_candidate():
    batch = pa.record_batch({"record_id": ["1", "1", "2", "3"], "row": [10, 11, 12, 13], "text": list("abcd")})
    found = pl.DataFrame({"record_id": ["1", "2", "3", None, "9"], "check": ["x"] * 5, "score": [1.0] * 5,
                          "detail": ['{"kind": "a"}', "{}", '{"row": 5}', '{"k": 1}', '{"z": 2}'],
                          "severity": [None] * 5})
    assert with_rows(found, batch)["detail"].to_list() == [
        '{"rows": [10, 11], "kind": "a"}',  # the batch repeats id 1: both candidates
        '{"row": 12}',
        '{"row": 5}',  # the check said which row already
        '{"k": 1}',  # shard-level finding
        '{"z": 2}',  # not a record of this batch
    ]
