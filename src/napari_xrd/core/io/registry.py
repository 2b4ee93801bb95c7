"""Which reader takes a file, and numbered series as one lazy stack.

Formats are recognised by content (magic bytes or the start of the header),
looking through gzip/bzip2 compression:

=======  ===========================================  ===============================
format   recognised by                                also claimed by name
=======  ===========================================  ===============================
cbf      ``###CBF`` / ``_array_data`` CIF header      .cbf[.gz|.bz2]
smv      ``{`` + ``HEADER_BYTES=``                    .img, .smv[.gz|.bz2]
nexus    HDF5 signature and an ``/entry/data`` group  unreadable HDF5 named .h5, .nxs
tiff     (Big)TIFF signature
npy      ``\\x93NUMPY`` signature
=======  ===========================================  ===============================

A file claimed only by its name (an empty ``x.cbf``, a truncated download)
is still claimed, so that opening it gives a clear :class:`ImageReadError`
instead of "no reader".  :func:`can_read` never raises.

Series
------
A numbered series (``lyso_00001.cbf``, ``lyso_00002.cbf``, ...) opens as one
dask stack, one chunk per file, read when a frame is shown.  Geometry,
pixel mask and metadata come from the first file; every other file is
checked for the same frame shape and dtype when read.  A directory or a
glob pattern opens the series it holds.
"""

from __future__ import annotations

import glob
import os
import re
import threading

import numpy as np

from napari_xrd.core.io import cbf, nexus, plain, smv
from napari_xrd.core.io._files import read_head, strip_compression_suffix
from napari_xrd.core.io.types import DiffractionImage, ImageReadError

__all__ = ["sniff", "can_read", "find_series", "open_image", "open_images"]

_NAME_FORMATS = {".cbf": "cbf", ".img": "smv", ".smv": "smv"}
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
SERIES_FORMATS = ("cbf", "smv")
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.[A-Za-z][A-Za-z0-9]*)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def _format_by_name(path) -> str | None:
    name = strip_compression_suffix(os.path.basename(str(path))).lower()
    return _NAME_FORMATS.get(os.path.splitext(name)[1])


def sniff(path) -> str | None:
    """Format name of a file (see the module table), or None.

    Raises
    ------
    OSError
        If the file cannot be opened (callers decide what that means).
    """
    path = str(path)
    with open(path, "rb") as fh:
        raw = fh.read(16)
    if nexus.is_hdf5(raw):
        probe = nexus.looks_like_nexus_image(path)
        if probe is None:  # a broken HDF5 file: ours if named like one
            return "nexus" if path.lower().endswith(_HDF5_SUFFIXES) else None
        return "nexus" if probe else None
    if plain.is_tiff(raw):
        return "tiff"
    if plain.is_npy(raw):
        return "npy"
    try:
        head = read_head(path, 1024)
    except (OSError, EOFError, ValueError):  # corrupt compressed stream
        head = b""
    if cbf.is_cbf(head):
        return "cbf"
    if smv.is_smv(head):
        return "smv"
    return _format_by_name(path)


def _is_pattern(path) -> bool:
    return isinstance(path, str) and bool(_GLOB_CHARS.search(os.path.basename(path))) and not os.path.exists(path)


def can_read(path) -> bool:
    """True if :func:`open_image` takes ``path``; never raises.

    ``path`` may be a file, a directory holding a CBF/SMV series, a glob
    pattern, or a list of files (all must be claimed).
    """
    try:
        if isinstance(path, (list, tuple)):
            return bool(path) and all(can_read(p) for p in path)
        path = os.fspath(path)
        if _is_pattern(path) or os.path.isdir(path):
            return bool(find_series(path))
        if not os.path.isfile(path):
            return False
        return sniff(path) is not None
    except Exception:  # "can I read this" must never raise
        return False


def _number_key(path):
    m = _NUMBERED.match(strip_compression_suffix(os.path.basename(path)))
    return (int(m.group("number")) if m else -1, path)


def find_series(path) -> list[str]:
    """The files of the numbered series that ``path`` belongs to.

    Parameters
    ----------
    path : str or Path
        One file of the series (``x_00007.cbf`` finds ``x_00001.cbf`` ...
        with the same prefix, digit count and extension), a directory
        holding exactly one series of CBF/SMV files, or a glob pattern.

    Returns
    -------
    list of str
        Sorted by frame number; ``[path]`` for a file that is not numbered;
        empty for a directory or pattern with no images.

    Raises
    ------
    ImageReadError
        For a directory holding several series (name one of its files).
    """
    path = os.fspath(path)
    if _is_pattern(path):
        files = [p for p in glob.glob(path) if os.path.isfile(p)]
        return sorted(files, key=_number_key)
    if os.path.isdir(path):
        groups: dict[str, list[str]] = {}
        for entry in sorted(os.listdir(path)):
            full = os.path.join(path, entry)
            if os.path.isfile(full) and _format_by_name(full) in SERIES_FORMATS:
                groups.setdefault(_template(full), []).append(full)
        if len(groups) > 1:
            listing = "; ".join(f"{os.path.basename(t)} ({len(v)} files)" for t, v in sorted(groups.items()))
            raise ImageReadError(path, f"directory holds {len(groups)} image series: {listing}; open one file of one")
        return sorted(next(iter(groups.values())), key=_number_key) if groups else []
    template = _template(path)
    if "#" not in os.path.basename(template):
        return [path]
    directory = os.path.dirname(path) or "."
    siblings = [os.path.join(directory, e) for e in os.listdir(directory)]
    return sorted((p for p in siblings if _template(p) == template and os.path.isfile(p)), key=_number_key)


def _template(path) -> str:
    """``x_00001.cbf.gz`` -> ``x_#####.cbf.gz`` (path kept)."""
    directory, name = os.path.split(path)
    stripped = strip_compression_suffix(name)
    m = _NUMBERED.match(stripped)
    if not m:
        return path
    tail = name[len(stripped):]
    return os.path.join(directory, m.group("prefix") + "#" * len(m.group("number")) + m.group("ext") + tail)


def _open_one(path, fmt, require_geometry) -> DiffractionImage:
    if fmt == "cbf":
        return cbf.read_cbf(path, require_geometry=require_geometry)
    if fmt == "smv":
        return smv.read_smv(path, require_geometry=require_geometry)
    if fmt == "nexus":
        return nexus.read_nexus(path, require_geometry=require_geometry)
    image = plain.read_tiff(path) if fmt == "tiff" else plain.read_npy(path)
    if require_geometry:
        raise ImageReadError(path, f"{fmt} files carry no detector geometry")
    return image


def _check_file(path) -> str:
    """Format of a claimed file, or a clear error for an unusable one."""
    if not os.path.exists(path):
        raise ImageReadError(path, "no such file")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a directory")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        fmt = sniff(path)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if fmt is None:
        with open(path, "rb") as fh:
            start = fh.read(16)
        raise ImageReadError(path, f"unrecognised file format (starts with {start!r})")
    return fmt


def open_image(path, *, series: bool | None = None, require_geometry: bool = False) -> DiffractionImage:
    """Open a diffraction image file, a numbered series or a list of files.

    Parameters
    ----------
    path : str, Path or list of them
        A CBF, SMV (``.img``), EIGER NeXus master, TIFF or ``.npy`` file;
        ``.gz``/``.bz2``-compressed CBF and SMV files are read directly.
        A directory or glob pattern opens the numbered series it holds; a
        list opens its files as one stack in the given order.
    series : bool, optional
        True: open the whole numbered series ``path`` belongs to (see
        :func:`find_series`).  None or False: just ``path``.
    require_geometry : bool
        Raise :class:`ImageReadError` naming the missing header keys when a
        file has no detector geometry (default: open it with
        ``geometry=None`` and a note in ``metadata["warnings"]``).

    Returns
    -------
    DiffractionImage
        ``data`` shape (n_frames, n_slow, n_fast); lazy (dask) for NeXus
        files and series.

    Raises
    ------
    ImageReadError
        For a file that is missing, empty, of no known format, truncated or
        corrupt, the message naming the file and the problem.
    """
    if isinstance(path, (list, tuple)):
        return open_images(path, require_geometry=require_geometry)
    path = os.fspath(path)
    if _is_pattern(path) or os.path.isdir(path) or series:
        files = find_series(path)
        if not files:
            raise ImageReadError(path, "no CBF or SMV image files found")
        return open_images(files, require_geometry=require_geometry)
    return _open_one(path, _check_file(path), require_geometry)


def _frame_reader(fmt):
    if fmt == "cbf":
        return cbf.read_cbf_frame
    if fmt == "smv":
        return smv.read_smv_frame
    if fmt == "tiff":
        return lambda p: plain.read_tiff(p).frame(0)
    if fmt == "npy":
        return lambda p: plain.read_npy(p).frame(0)
    return None


class _FileStack:
    """Array-like over single-frame files, for :func:`dask.array.from_array`.

    Item ``i`` is read from ``paths[i]`` when asked for and checked against
    the first file's shape; ``first`` (already read) is handed out once.
    One array-like keeps the dask graph small: a series of thousands of
    files opens and slices in milliseconds.
    """

    def __init__(self, reader, paths, shape, dtype, first=None):
        self.reader, self.paths = reader, list(paths)
        self.shape, self.dtype, self.ndim = (len(self.paths),) + tuple(shape), np.dtype(dtype), 3
        self._first = first
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def _frame(self, i):
        if i == 0 and self._first is not None:
            with self._lock:
                first, self._first = self._first, None
            if first is not None:
                return first
        frame = np.asarray(self.reader(self.paths[i]))
        if frame.shape != self.shape[1:]:
            raise ImageReadError(self.paths[i], f"frame shape {frame.shape} differs from the series' {self.shape[1:]}")
        return frame.astype(self.dtype, copy=False)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        k0, rest = key[0], key[1:]
        if isinstance(k0, slice):
            return np.stack([self._frame(i)[rest] for i in range(self.shape[0])[k0]])
        return self._frame(range(self.shape[0])[k0])[rest]


def open_images(paths, *, require_geometry: bool = False) -> DiffractionImage:
    """Open several single-frame files as one lazy stack.

    Parameters
    ----------
    paths : list of str or Path
        Files of one format and frame shape, in frame order.
    require_geometry : bool
        As for :func:`open_image` (checked on the first file).

    Returns
    -------
    DiffractionImage
        ``data`` a dask array (n_files, n_slow, n_fast), one chunk per file;
        geometry, pixel mask and metadata from the first file, with
        ``metadata["series"]``: template, number of files, first and last.
    """
    import dask.array as da
    from dask.base import tokenize

    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ImageReadError("<no files>", "empty list of files")
    fmt = _check_file(paths[0])
    first = _open_one(paths[0], fmt, require_geometry)
    if len(paths) == 1:
        return first
    reader = _frame_reader(fmt)
    if reader is None or first.n_frames != 1:
        raise ImageReadError(paths[0], f"{fmt} files hold several frames; open them one at a time")
    shape, dtype = first.frame_shape, first.dtype
    stack = _FileStack(reader, paths, shape, dtype, first=np.asarray(first.data[0]))
    data = da.from_array(stack, chunks=(1,) + shape, asarray=False, lock=False,
                         name=f"series-{tokenize(paths)}", meta=np.empty((0, 0, 0), dtype))
    metadata = dict(first.metadata)
    numbers = [_number_key(p)[0] for p in paths]
    metadata["series"] = {
        "template": _template(paths[0]),
        "n_files": len(paths),
        "first": paths[0],
        "last": paths[-1],
    }
    if -1 not in numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        metadata.setdefault("warnings", []).append("series numbers are not contiguous")
    return DiffractionImage(
        data=data,
        geometry=first.geometry,
        pixel_mask=first.pixel_mask,
        path=paths[0],
        format=first.format,
        metadata=metadata,
    )
