"""Lossless compression with a language model (range coding under the model's next-token
distributions): the container format, the coding loop, the worker pool, and the public API.

``compress``/``decompress`` work on bytes, ``compress_stream``/``decompress_stream`` on binary
files; ``container_info`` reads a container's header. The format is documented byte for byte in
``docs/container-format.md``; the model's fast incremental step lives with the model
(``entropykit.models``).
"""

from __future__ import annotations

from entropykit.codec.compression import (
    DEFAULT_CHUNK_SIZE,
    ContainerError,
    compress,
    compress_stream,
    container_info,
    decompress,
    decompress_stream,
    resolve_precision,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE", "ContainerError", "compress", "compress_stream", "container_info", "decompress",
    "decompress_stream", "resolve_precision",
]
