"""Low-level file helpers shared by the readers: compression and peeking.

Beamlines and processing programs (DIALS, XDS) keep CBF and SMV frames
compressed with gzip or bzip2; every reader opens files through
:func:`read_bytes` and :func:`read_head` so that ``frame.cbf.gz`` reads like
``frame.cbf``.  Compression is recognised by its magic bytes, not the name.
"""

from __future__ import annotations

import bz2
import gzip
import os

__all__ = ["compression_of", "read_head", "read_bytes", "strip_compression_suffix"]

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2"}
_SUFFIXES = (".gz", ".bz2")


def compression_of(path) -> str | None:
    """``"gzip"``, ``"bz2"`` or None, from the file's first bytes."""
    with open(path, "rb") as fh:
        start = fh.read(3)
    for magic, name in _MAGIC.items():
        if start.startswith(magic):
            return name
    return None


def _opener(path):
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def read_head(path, n: int = 4096) -> bytes:
    """The first ``n`` bytes of the (decompressed) file content."""
    with _opener(path) as fh:
        return fh.read(n)


def read_bytes(path) -> bytes:
    """The whole (decompressed) file content.

    Raises
    ------
    OSError, EOFError
        For unreadable files or corrupt compressed streams (callers turn
        these into :class:`~napari_xrd.core.io.types.ImageReadError`).
    """
    with _opener(path) as fh:
        return fh.read()


def strip_compression_suffix(name: str) -> str:
    """``"x.cbf.gz"`` -> ``"x.cbf"``; other names unchanged."""
    low = name.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def file_size(path) -> int:
    """Size on disk in bytes."""
    return os.stat(path).st_size
