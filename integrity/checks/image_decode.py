"""``image.decode``: images that cannot be decoded safely."""
from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from integrity.checks.base import CheckOutput, findings_frame
from integrity.checks.image_base import ImageCheck, ImageOptions


class ImageDecodeCheck(ImageCheck):
    """``image.decode``: images that cannot be decoded safely, one finding per record.

    Scores: 1.0 for attack-shaped input (a decompression bomb, a tar member the
    connector rejected as unsafe: absolute path, ``..``, link, device), 0.6 for
    an image over ``max_bytes``, 0.5 for corrupt, truncated or unsupported data
    and unusable members, 0.1 for a record without image bytes (only with
    ``report_missing``).
    """

    name = "image.decode"
    description = ("Images that cannot be decoded safely: decompression bombs, corrupt or truncated data, "
                   "unsupported formats, and archive members the connector rejected (paths escaping the "
                   "archive, links, devices).")
    class Options(ImageOptions):
        report_missing: bool = Field(False, description="also report records without image bytes (score 0.1)")
    default_severity = "warn"
    SCORES = {"rejected": 1.0, "bomb": 1.0, "too_large": 0.6, "corrupt": 0.5, "unsupported": 0.5,
              "unusable": 0.5, "missing": 0.1}

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        a = self.analysis(batch)
        ids = batch.column("record_id").to_pylist()
        rows = batch.column("row").to_pylist()
        rec, scores, details = [], [], []
        for i, status in enumerate(a.status):
            if status == "ok" or (status == "missing" and not self.options["report_missing"]):
                continue
            rec.append(ids[i])
            scores.append(self.SCORES.get(status, 0.5))
            d = {"problem": status, "error": a.error[i], "row": rows[i]}
            if a.format[i]:
                d["format"] = a.format[i]
            if a.width[i]:
                d["declared_size"] = [int(a.width[i]), int(a.height[i])]
            details.append(d)
        return CheckOutput(findings=findings_frame(rec, scores, details) if rec else None)
