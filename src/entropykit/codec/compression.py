"""The old import path ``entropykit.codec.compression``: a re-export of :mod:`entropykit.codec` (and
of the precision vocabulary), kept only while ``entropykit.cli.cmd_compress`` imports from it.

>>> from entropykit.codec.compression import compress as old
>>> from entropykit.codec import compress
>>> old is compress
True
"""

from __future__ import annotations

from entropykit.codec import (
    DEFAULT_CHUNK_SIZE,
    ContainerError,
    compress,
    compress_stream,
    container_info,
    decompress,
    decompress_stream,
    resolve_precision,
)
from entropykit.precision import PRECISIONS

__all__ = [
    "DEFAULT_CHUNK_SIZE", "PRECISIONS", "ContainerError", "compress", "compress_stream", "container_info",
    "decompress", "decompress_stream", "resolve_precision",
]
