"""The one on-disk format for training examples (simulated stills and user corrections).

Layout
------
A dataset is a directory::

    DATASET/
      dataset.json                 {"format": "napari-xrd-dataset", "version": 1, ...}
      shards/
        20261121T201500Z-000123-4f2a9c1e.h5     committed shards, never modified
        .tmp-....h5                             a shard being written (ignored)

Each shard is an HDF5 file holding whole examples::

    /                      attrs: format, version, n_examples, complete, created
    /examples/000000/      one group per example
        image              (n_slow, n_fast), chunked, bitshuffle-LZ4 (or gzip), fletcher32
        pixel_mask         uint32 (napari_xrd.core.masks bits), optional
        spot_mask          uint8 0/1, optional
        spots              compound table (e.g. fast, slow, h, k, l, d, ...), optional
        extra/NAME         any further named arrays (e.g. a model's prediction)
        attrs: example_id (uuid4 hex), kind, geometry (JSON of
               DetectorGeometry.to_dict), anomaly_labels (int8, ANOMALY_CLASSES
               order, -1 = not labelled), anomaly_classes (JSON), provenance
               (JSON), attrs (JSON)

Provenance is a free dict: for simulated examples ``{"source": "simulated",
"generator": ..., "seed": ..., "params": ...}``; for corrections of real
frames ``{"source": "correction", "file": ..., "frame": ..., "frame_sha256":
:func:`frame_sha256`, "model": ..., "user": ..., "time": ...}``.

Crash safety
------------
A shard is written under a temporary name, flushed, fsynced and only then
renamed into place with :func:`os.replace` (atomic on POSIX and Windows), and
the directory is fsynced.  A writer killed at any moment leaves every
committed shard intact; its temporary file is ignored by readers and reported
by :meth:`Dataset.verify`.  Shard names carry a UTC time, the process id and
a random suffix, so any number of processes can write into one dataset at
once without coordination (callers wanting more, such as one store shared by
several napari windows, add a file lock on top).  There is no central index:
readers scan the shards, so nothing mutable can be damaged.
Every chunk carries a Fletcher-32 checksum, so a damaged byte is detected on
read rather than returned silently.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Example",
    "DatasetError",
    "DatasetWriter",
    "Dataset",
    "VerifyReport",
    "open_dataset",
    "frame_sha256",
]

FORMAT = "napari-xrd-dataset"
FORMAT_VERSION = 1
_SHARD_FORMAT = "napari-xrd-dataset-shard"
_TABLE_FIELDS = ("image", "pixel_mask", "spot_mask", "spots")


class DatasetError(OSError):
    """A dataset or shard that cannot be read; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _anomaly_classes() -> tuple[str, ...]:
    from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES

    return ANOMALY_CLASSES


def frame_sha256(image: np.ndarray) -> str:
    """sha256 (hex) of a frame's pixels, its dtype and shape: the signature of an image version."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Example:
    """One training example.

    Attributes
    ----------
    image : (n_slow, n_fast) ndarray
        Detector values.
    pixel_mask : (n_slow, n_fast) uint32 ndarray or None
    spot_mask : (n_slow, n_fast) bool ndarray or None
    spots : structured ndarray or None
        Spot table; ``fast``, ``slow`` in pixels, DIALS corner convention.
        A dict of equal-length arrays is accepted and converted.
    geometry : DetectorGeometry or None
        True (or corrected) geometry: beam centre, tilt, distance, wavelength.
    anomaly_labels : (7,) int8 ndarray or None
        :data:`~napari_xrd.core.simulate.anomalies.ANOMALY_CLASSES` order;
        1 present, 0 absent, -1 not labelled (None: all -1).
    provenance : dict
        Where the example came from (see the module docstring).
    attrs : dict
        Free-form JSON-serialisable per-example attributes.
    extra : dict of str -> ndarray
        Further named arrays (for example what a model predicted).
    kind : str
        "simulated", "correction", ...
    example_id : str
        Unique id (uuid4 hex), assigned when missing.
    """

    image: np.ndarray
    pixel_mask: np.ndarray | None = None
    spot_mask: np.ndarray | None = None
    spots: Any = None
    geometry: DetectorGeometry | None = None
    anomaly_labels: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    kind: str = ""
    example_id: str = ""

    def __post_init__(self):
        if not self.example_id:
            self.example_id = uuid.uuid4().hex
        if not self.kind:
            self.kind = str(self.provenance.get("source", "unknown"))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, DetectorGeometry):
        return o.to_dict()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _dumps(obj) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=True)


def _as_table(spots) -> np.ndarray:
    if isinstance(spots, np.ndarray) and spots.dtype.names:
        return spots
    if isinstance(spots, dict):
        cols = {k: np.asarray(v) for k, v in spots.items()}
        n = {len(v) for v in cols.values()}
        if len(n) > 1:
            raise ValueError(f"spot table columns have different lengths: {sorted(n)}")
        table = np.zeros(n.pop() if n else 0, dtype=[(k, v.dtype) for k, v in cols.items()])
        for k, v in cols.items():
            table[k] = v
        return table
    raise ValueError("spots must be a structured array or a dict of equal-length arrays")


def _validate(ex: Example) -> None:
    img = np.asarray(ex.image)
    if img.ndim != 2:
        raise ValueError(f"example image must be 2-D (n_slow, n_fast), got shape {img.shape}")
    for name in ("pixel_mask", "spot_mask"):
        a = getattr(ex, name)
        if a is not None and np.shape(a) != img.shape:
            raise ValueError(f"example {name} has shape {np.shape(a)}, image has {img.shape}")
    if ex.geometry is not None and tuple(ex.geometry.shape) != img.shape:
        raise ValueError(f"example geometry shape {ex.geometry.shape} does not match image shape {img.shape}")
    if ex.anomaly_labels is not None and len(ex.anomaly_labels) != len(_anomaly_classes()):
        raise ValueError(f"anomaly_labels must have {len(_anomaly_classes())} entries")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DatasetWriter:
    """Append examples to a dataset directory, one immutable shard at a time.

    Parameters
    ----------
    path : str or Path
        Dataset directory (created if missing).
    examples_per_shard : int
        Examples buffered in the open temporary shard before it is committed;
        1 commits every example at once (what an interactive save wants).
    compression : {"bslz4", "gzip"}
        Codec for arrays: bitshuffle + LZ4 (the EIGER codec, via hdf5plugin;
        about 10 times faster than gzip on detector frames and as small), or
        shuffle + gzip (readable by any HDF5 without plugins).
    compression_level : int
        gzip level (1 fast ... 9 small), for ``compression="gzip"``.
    chunk : int
        Chunk edge for image-like arrays.

    Examples
    --------
    >>> with DatasetWriter(tmp_path) as w:          # doctest: +SKIP
    ...     w.add(Example(image=img, spot_mask=mask))
    """

    def __init__(
        self, path, *, examples_per_shard: int = 64, compression: str = "bslz4", compression_level: int = 1, chunk: int = 256
    ):
        if compression not in ("bslz4", "gzip"):
            raise ValueError(f"compression must be 'bslz4' or 'gzip', got {compression!r}")
        self.compression = compression
        if examples_per_shard < 1:
            raise ValueError("examples_per_shard must be at least 1")
        self.path = Path(path)
        self.examples_per_shard = int(examples_per_shard)
        self.compression_level = int(compression_level)
        self.chunk = int(chunk)
        self.committed: list[Path] = []
        self._file = None
        self._tmp: Path | None = None
        self._n = 0
        _init_dataset_dir(self.path)

    # --------------------------------------------------------------- api
    def add(self, example: Example) -> str:
        """Write one example; returns its ``example_id``."""
        _validate(example)
        if self._file is None:
            self._open_shard()
        name = f"{self._n:06d}"
        grp = self._file["examples"].create_group(name)
        try:
            self._write_example(grp, example)
        except BaseException:
            del self._file["examples"][name]
            raise
        self._n += 1
        if self._n >= self.examples_per_shard:
            self.flush()
        return example.example_id

    def add_many(self, examples) -> list[str]:
        """Write several examples; returns their ids."""
        return [self.add(ex) for ex in examples]

    def flush(self) -> Path | None:
        """Commit the open shard (flush, fsync, atomic rename); returns its final path."""
        if self._file is None:
            return None
        f, tmp = self._file, self._tmp
        self._file, self._tmp = None, None
        if self._n == 0:
            f.close()
            tmp.unlink(missing_ok=True)
            return None
        f.attrs["n_examples"] = self._n
        f.attrs["complete"] = True
        f.flush()
        f.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = tmp.with_name(tmp.name[len(".tmp-") :])
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        self.committed.append(final)
        self._n = 0
        return final

    def close(self) -> None:
        """Commit what was added (complete examples only)."""
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            if self._file is not None:
                self._file.close()
        except Exception:
            pass

    # ----------------------------------------------------------- private
    def _open_shard(self):
        import h5py
        import hdf5plugin  # noqa: F401 - registers the bitshuffle-LZ4 filter

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f".tmp-{stamp}-{os.getpid():07d}-{uuid.uuid4().hex[:12]}.h5"
        self._tmp = self.path / "shards" / name
        f = h5py.File(self._tmp, "w-")
        f.attrs["format"] = _SHARD_FORMAT
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["created"] = _utc_now()
        f.attrs["writer"] = _dumps({"host": socket.gethostname(), "pid": os.getpid()})
        f.attrs["complete"] = False
        f.create_group("examples")
        self._file = f

    def _array(self, grp, name, data):
        data = np.asarray(data)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        kw = {}
        if data.size and data.ndim >= 1:
            chunks = tuple(min(self.chunk, n) for n in data.shape) if data.ndim == 2 else True
            if self.compression == "bslz4" and data.dtype.kind in "iuf":
                import hdf5plugin

                kw = dict(chunks=chunks, fletcher32=True, **hdf5plugin.Bitshuffle(cname="lz4"))
            else:
                kw = dict(chunks=chunks, shuffle=True, compression="gzip",
                          compression_opts=self.compression_level, fletcher32=True)
        grp.create_dataset(name, data=data, **kw)

    def _write_example(self, grp, ex: Example) -> None:
        self._array(grp, "image", ex.image)
        if ex.pixel_mask is not None:
            self._array(grp, "pixel_mask", np.asarray(ex.pixel_mask, dtype=np.uint32))
        if ex.spot_mask is not None:
            self._array(grp, "spot_mask", np.asarray(ex.spot_mask, dtype=bool))
        if ex.spots is not None:
            self._array(grp, "spots", _as_table(ex.spots))
        if ex.extra:
            eg = grp.create_group("extra")
            for k, v in ex.extra.items():
                self._array(eg, k, v)
        classes = _anomaly_classes()
        labels = (
            np.full(len(classes), -1, np.int8) if ex.anomaly_labels is None else np.asarray(ex.anomaly_labels, np.int8)
        )
        grp.attrs["example_id"] = ex.example_id
        grp.attrs["kind"] = ex.kind
        grp.attrs["geometry"] = "null" if ex.geometry is None else _dumps(ex.geometry.to_dict())
        grp.attrs["anomaly_labels"] = labels
        grp.attrs["anomaly_classes"] = _dumps(list(classes))
        grp.attrs["provenance"] = _dumps(ex.provenance)
        grp.attrs["attrs"] = _dumps(ex.attrs)


def _init_dataset_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "shards").mkdir(exist_ok=True)
    meta = path / "dataset.json"
    if meta.exists():
        _read_meta(path)
        return
    tmp = path / f".dataset.json.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "created": _utc_now(),
                               "anomaly_classes": list(_anomaly_classes())}, indent=1))
    try:
        os.link(tmp, meta)  # atomic create-if-absent: concurrent writers agree on one file
    except FileExistsError:
        pass
    except OSError:
        if not meta.exists():
            os.replace(tmp, meta)
    tmp.unlink(missing_ok=True)


def _read_meta(path: Path) -> dict:
    meta = path / "dataset.json"
    try:
        d = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(meta, f"unreadable dataset description ({exc})") from None
    if d.get("format") != FORMAT:
        raise DatasetError(meta, f"not a {FORMAT} directory (format={d.get('format')!r})")
    if int(d.get("version", 0)) > FORMAT_VERSION:
        raise DatasetError(meta, f"format version {d['version']} is newer than this napari-xrd reads ({FORMAT_VERSION})")
    return d


@dataclass
class ShardInfo:
    path: Path
    names: list
    first: int


@dataclass
class VerifyReport:
    """What :meth:`Dataset.verify` found.

    Attributes
    ----------
    n_examples : int
        Examples that read back completely.
    bad_shards : list of (path, problem)
    bad_examples : list of (path, example name, problem)
    temporary_files : list of Path
        Shards left uncommitted by an interrupted writer (ignored by readers).
    """

    n_examples: int = 0
    bad_shards: list = field(default_factory=list)
    bad_examples: list = field(default_factory=list)
    temporary_files: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_shards and not self.bad_examples

    def __str__(self) -> str:
        lines = [f"{self.n_examples} readable examples"]
        lines += [f"BAD SHARD {p}: {why}" for p, why in self.bad_shards]
        lines += [f"BAD EXAMPLE {p}:{n}: {why}" for p, n, why in self.bad_examples]
        lines += [f"uncommitted temporary file {p}" for p in self.temporary_files]
        return "\n".join(lines)


class Dataset(Sequence):
    """Read-only, sequence-like view of a dataset directory.

    ``len(ds)``, ``ds[i]`` (an :class:`Example`), ``ds[a:b]``, iteration and
    :meth:`get` (selected fields only, faster for training).  Shards are
    scanned when the dataset is opened (:meth:`refresh` rescans); files are
    opened lazily and reopened after a fork, so a dataset can be handed to
    DataLoader workers.

    Parameters
    ----------
    path : str or Path
    on_error : {"raise", "skip"}
        What to do with a shard that cannot be opened: raise
        :class:`DatasetError` naming it, or leave it out (see
        :attr:`bad_shards`).
    """

    def __init__(self, path, *, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(self.path, "no such dataset directory")
        if not (self.path / "dataset.json").exists():
            raise DatasetError(self.path, "not a napari-xrd dataset (no dataset.json)")
        self.meta = _read_meta(self.path)
        self.on_error = on_error
        self._handles: dict = {}
        self._pid = os.getpid()
        self.refresh()

    # -------------------------------------------------------------- scan
    def shard_paths(self) -> list[Path]:
        return sorted(p for p in (self.path / "shards").glob("*.h5") if not p.name.startswith("."))

    def refresh(self) -> None:
        """Rescan the shard directory (picks up shards committed since)."""
        import h5py
        import hdf5plugin  # noqa: F401 - registers the bitshuffle-LZ4 filter

        self.close()
        self.shards: list[ShardInfo] = []
        self.bad_shards: list[tuple[Path, str]] = []
        total = 0
        for p in self.shard_paths():
            try:
                with h5py.File(p, "r") as f:
                    problem = _shard_problem(f)
                    names = sorted(f["examples"].keys()) if problem is None else []
            except (OSError, KeyError) as exc:
                problem = f"cannot open shard ({exc})"
            if problem is not None:
                if self.on_error == "raise":
                    raise DatasetError(p, problem + "; run verify() to see which examples survive")
                self.bad_shards.append((p, problem))
                continue
            self.shards.append(ShardInfo(p, names, total))
            total += len(names)
        self._len = total
        self._starts = np.array([s.first for s in self.shards], dtype=np.int64)

    # --------------------------------------------------------- sequence
    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._read(self._locate(index), fields=None)

    def get(self, index: int, fields=("image", "spot_mask")) -> dict:
        """Only some fields of example ``index`` as a dict (arrays, ``geometry``, ``anomaly_labels``, ...)."""
        return self._read(self._locate(index), fields=tuple(fields))

    def example_ids(self) -> list[str]:
        out = []
        for s in self.shards:
            f = self._handle(s.path)
            out += [str(f["examples"][n].attrs["example_id"]) for n in s.names]
        return out

    # --------------------------------------------------------- internals
    def _locate(self, index: int) -> tuple[ShardInfo, str]:
        index = int(index)
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"example {index} out of range for dataset of {self._len}")
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        s = self.shards[k]
        return s, s.names[index - s.first]

    def _handle(self, path: Path):
        import h5py
        import hdf5plugin  # noqa: F401 - registers the bitshuffle-LZ4 filter

        if os.getpid() != self._pid:  # forked: handles are not shareable
            self._handles = {}
            self._pid = os.getpid()
        f = self._handles.get(path)
        if f is None:
            if len(self._handles) >= 32:
                old = next(iter(self._handles))
                self._handles.pop(old).close()
            f = h5py.File(path, "r")
            self._handles[path] = f
        return f

    def _read(self, loc, fields):
        shard, name = loc
        try:
            grp = self._handle(shard.path)["examples"][name]
            return _read_group(grp, fields)
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(shard.path, f"example {name} is damaged ({exc}); run verify()") from None

    # ------------------------------------------------------------ verify
    def verify(self) -> VerifyReport:
        """Read every example in full (checksums included) and report what is damaged."""
        import h5py
        import hdf5plugin  # noqa: F401 - registers the bitshuffle-LZ4 filter

        self.close()
        rep = VerifyReport()
        rep.temporary_files = sorted((self.path / "shards").glob(".tmp-*"))
        for p in self.shard_paths():
            try:
                f = h5py.File(p, "r")
            except OSError as exc:
                rep.bad_shards.append((p, f"cannot open shard ({exc})"))
                continue
            with f:
                problem = _shard_problem(f)
                if problem is not None:
                    rep.bad_shards.append((p, problem))
                    continue
                for name in sorted(f["examples"].keys()):
                    try:
                        _read_group(f["examples"][name], None)
                        rep.n_examples += 1
                    except (OSError, KeyError, ValueError) as exc:
                        rep.bad_examples.append((p, name, str(exc)))
        return rep

    def __getstate__(self):
        # picklable for DataLoader workers and process pools: open files stay behind
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        for f in getattr(self, "_handles", {}).values():
            try:
                f.close()
            except Exception:  # pragma: no cover
                pass
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, {len(self)} examples in {len(self.shards)} shards)"


def _shard_problem(f) -> str | None:
    if f.attrs.get("format") != _SHARD_FORMAT:
        return "not a napari-xrd shard (format attribute missing)"
    if not bool(f.attrs.get("complete", False)):
        return "incomplete shard (writer did not finish)"
    if "examples" not in f:
        return "shard has no examples group"
    n = int(f.attrs.get("n_examples", -1))
    if n != len(f["examples"]):
        return f"shard says {n} examples but holds {len(f['examples'])}"
    return None


def _read_group(grp, fields) -> Example | dict:
    want = (lambda k: True) if fields is None else (lambda k: k in fields)
    out: dict = {}
    for k in _TABLE_FIELDS:
        if want(k):
            out[k] = grp[k][()] if k in grp else None
    if out.get("spot_mask") is not None:
        out["spot_mask"] = out["spot_mask"].astype(bool)
    if "extra" in grp and (fields is None or "extra" in fields):
        out["extra"] = {k: v[()] for k, v in grp["extra"].items()}
    a = grp.attrs
    geom = json.loads(a["geometry"])
    labels = np.asarray(a["anomaly_labels"], dtype=np.int8)
    stored = json.loads(a["anomaly_classes"])
    classes = list(_anomaly_classes())
    if stored != classes:  # map by name (classes added later stay unlabelled)
        m = dict(zip(stored, labels))
        labels = np.array([m.get(c, -1) for c in classes], dtype=np.int8)
    meta = dict(
        geometry=None if geom is None else DetectorGeometry.from_dict(geom),
        anomaly_labels=labels,
        provenance=json.loads(a["provenance"]),
        attrs=json.loads(a["attrs"]),
        kind=str(a["kind"]),
        example_id=str(a["example_id"]),
    )
    if fields is not None:
        out.update(meta)
        return out
    return Example(
        image=out["image"], pixel_mask=out["pixel_mask"], spot_mask=out["spot_mask"], spots=out["spots"],
        extra=out.get("extra", {}), **meta,
    )


def open_dataset(path, *, on_error: str = "raise") -> Dataset:
    """Open a dataset directory for reading (see :class:`Dataset`)."""
    return Dataset(path, on_error=on_error)
