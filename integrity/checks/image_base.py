"""Base of the image checks: decode limits from the options and the shared per-batch analysis.

Every check that reads the ``image`` column derives from :class:`ImageCheck`,
so the checks of one scan decode each image once (the analysis of
:mod:`integrity.analysis.images` is memoized per batch and thread).
"""
from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from connectors.images import DEFAULT_LIMITS, DecodeLimits
from integrity.analysis.images import ImageAnalysis, analyze_batch
from integrity.checks.base import Check, CheckOptions


class ImageOptions(CheckOptions):
    """The decode limits every image check accepts as options (same keys, same defaults)."""

    max_pixels: int = Field(DEFAULT_LIMITS.max_pixels, ge=1,
                            description="declared pixels above which an image is a bomb (never decoded)")
    max_bytes: int = Field(DEFAULT_LIMITS.max_bytes, ge=1, description="compressed bytes of one image")


#: decode limits every image check accepts as options (same keys, same defaults)
LIMIT_OPTIONS = ImageOptions.defaults()


class ImageCheck(Check):
    """Base of the checks that read the ``image`` column: decode limits from the
    options, and the memoized per-batch analysis (one decode for all image checks
    that share the limits)."""

    requires = ("image",)
    report_section = "images"  # the generic section plus thumbnails of the flagged images

    class Options(ImageOptions):
        pass

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(max_pixels=int(self.options.get("max_pixels", DEFAULT_LIMITS.max_pixels)),
                            max_bytes=int(self.options.get("max_bytes", DEFAULT_LIMITS.max_bytes)))

    def analysis(self, batch: pa.RecordBatch) -> ImageAnalysis:
        return analyze_batch(batch, self.limits)

    @property
    def shard_uri(self) -> str:
        return self.shard.uri if self.shard is not None else ""
