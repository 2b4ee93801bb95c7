"""The corrections store: what users fix in napari, kept as training data.

A store is a dataset directory in the one dataset format
(:mod:`napari_xrd.core.dataset`) plus a lock file.  Every save is one new
immutable shard committed atomically (write to a temporary file, fsync,
rename), so:

* an interrupted or killed save leaves every earlier correction intact;
* nothing is ever overwritten: saving again for the same frame appends a
  newer correction that names the one it supersedes;
* several napari windows or processes can save into one store at once: the
  lock serialises the check-then-write step so no save is lost and the
  image-version check sees every earlier save.

Each correction is tied to the exact pixels it was made on
(:func:`~napari_xrd.core.dataset.frame_sha256`).  A correction for a file
and frame whose earlier corrections were made on *different* pixels (the
file was reprocessed or replaced) is refused with :class:`CorrectionConflict`
instead of silently mixing versions.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from napari_xrd.core.dataset import Dataset, DatasetError, DatasetWriter, Example, frame_sha256

__all__ = ["CorrectionStore", "CorrectionConflict", "StoreLockTimeout", "CorrectionRecord"]

LOCK_NAME = ".store.lock"


class CorrectionConflict(ValueError):
    """A correction for a different version of an image than earlier ones."""


class StoreLockTimeout(OSError):
    """Another process held the store's lock for too long."""


@dataclass(frozen=True)
class CorrectionRecord:
    """What :meth:`CorrectionStore.list` reports about one stored correction."""

    index: int
    example_id: str
    file: str
    frame: int
    frame_sha256: str
    time: str
    user: str
    changed: dict
    supersedes: str | None
    shard: str


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return os.environ.get("USER", "unknown")


def canonical_source(path) -> str:
    """Absolute, symlink-free path of a source file, as stored in provenance."""
    return str(Path(path).expanduser().resolve())


class CorrectionStore:
    """Append-only store of user corrections.

    Parameters
    ----------
    path : str or Path
        Store directory (created on first save).
    lock_timeout : float
        Seconds to wait for another process's save before giving up.
    """

    def __init__(self, path, *, lock_timeout: float = 30.0):
        self.path = Path(path).expanduser()
        self.lock_timeout = float(lock_timeout)
        self._index: dict[str, list[dict]] = {}  # shard name -> provenance records (shards never change)

    # --------------------------------------------------------------- lock
    def _lock(self):
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK_NAME), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout as exc:
            raise StoreLockTimeout(
                f"{self.path}: another process has held the corrections store lock for over "
                f"{self.lock_timeout:.0f} s; nothing was saved"
            ) from exc
        return lock

    # --------------------------------------------------------------- read
    def exists(self) -> bool:
        return (self.path / "dataset.json").exists()

    def dataset(self, *, on_error: str = "raise") -> Dataset:
        """The store as a :class:`~napari_xrd.core.dataset.Dataset` (for training)."""
        return Dataset(self.path, on_error=on_error)

    def list(self, *, on_error: str = "skip") -> list[CorrectionRecord]:
        """Every stored correction, oldest first (damaged shards are left out with ``on_error="skip"``)."""
        if not self.exists():
            return []
        ds = self.dataset(on_error=on_error)
        out = []
        with ds:
            for shard in ds.shards:
                key = shard.path.name
                if key not in self._index:
                    recs = []
                    for j, _ in enumerate(shard.names):
                        meta = ds.get(shard.first + j, fields=())
                        recs.append({"example_id": meta["example_id"], **meta["provenance"]})
                    self._index[key] = recs
                for j, rec in enumerate(self._index[key]):
                    out.append(
                        CorrectionRecord(
                            index=shard.first + j,
                            example_id=rec["example_id"],
                            file=rec.get("file", ""),
                            frame=int(rec.get("frame", 0)),
                            frame_sha256=rec.get("frame_sha256", ""),
                            time=rec.get("time", ""),
                            user=rec.get("user", ""),
                            changed=rec.get("changed", {}),
                            supersedes=rec.get("supersedes"),
                            shard=key,
                        )
                    )
        out.sort(key=lambda r: (r.time, r.shard))
        return out

    def history(self, source_file, frame: int = 0) -> list[CorrectionRecord]:
        """Earlier corrections of one frame of one file, oldest first."""
        src = canonical_source(source_file)
        return [r for r in self.list() if r.file == src and r.frame == int(frame)]

    def latest(self, source_file, frame: int = 0) -> Example | None:
        """The newest correction of a frame, in full, or None."""
        hist = self.history(source_file, frame)
        if not hist:
            return None
        with self.dataset(on_error="skip") as ds:
            return ds[hist[-1].index]

    # --------------------------------------------------------------- write
    def save(self, example: Example) -> str:
        """Store one correction atomically; returns its example id.

        ``example.provenance`` must hold ``file``, ``frame`` and
        ``frame_sha256`` (see :func:`napari_xrd.core.corrections.make_correction`).

        Raises
        ------
        CorrectionConflict
            Earlier corrections of this file and frame were made on other pixels.
        StoreLockTimeout
            Another process kept the store locked too long.
        """
        prov = example.provenance
        for key in ("file", "frame", "frame_sha256"):
            if key not in prov:
                raise ValueError(f"correction provenance lacks {key!r}")
        if frame_sha256(example.image) != prov["frame_sha256"]:
            raise ValueError("correction image does not match its recorded frame_sha256")
        lock = self._lock()
        try:
            hist = self.history(prov["file"], prov["frame"]) if self.exists() else []
            other = [r for r in hist if r.frame_sha256 != prov["frame_sha256"]]
            if other:
                raise CorrectionConflict(
                    f"{prov['file']} frame {prov['frame']}: the store holds {len(other)} correction(s) of a "
                    f"different version of this image (pixels sha256 {other[-1].frame_sha256[:12]}…, "
                    f"now {prov['frame_sha256'][:12]}…), last saved {other[-1].time} by {other[-1].user}. "
                    "The file has changed since; nothing was saved. Use a new store for the new data."
                )
            if hist:
                prov["supersedes"] = hist[-1].example_id
            with DatasetWriter(self.path, examples_per_shard=1) as writer:
                writer.add(example)
            return example.example_id
        finally:
            lock.release()

    # ------------------------------------------------------------ verify
    def verify(self):
        """Check every stored correction in full; see :meth:`Dataset.verify`."""
        if not self.exists():
            raise DatasetError(self.path, "no corrections store here (no dataset.json)")
        with self.dataset(on_error="skip") as ds:
            return ds.verify()

    def export(self, destination, *, latest_only: bool = True) -> int:
        """Copy the readable corrections into a new dataset directory.

        Parameters
        ----------
        destination : str or Path
            A new (or empty) directory; it becomes a dataset in the one format.
        latest_only : bool
            Keep only the newest correction of each (file, frame).

        Returns
        -------
        n : int
            Number of corrections exported.
        """
        dest = Path(destination)
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"{dest}: export destination is not empty")
        records = self.list()
        if latest_only:
            newest: dict[tuple[str, int], CorrectionRecord] = {}
            for r in records:
                newest[(r.file, r.frame)] = r
            records = sorted(newest.values(), key=lambda r: r.index)
        report = self.verify()
        damaged = {(str(p), n) for p, n, _ in report.bad_examples}
        n = 0
        with self.dataset(on_error="skip") as ds, DatasetWriter(dest, examples_per_shard=32) as w:
            for r in records:
                if (str(self.path / "shards" / r.shard), f"{r.index - _first(ds, r.shard):06d}") in damaged:
                    continue
                w.add(ds[r.index])
                n += 1
        return n

    def remove_lock(self) -> None:
        """Delete a stale lock file (only needed after a crash on some file systems)."""
        try:
            os.unlink(self.path / LOCK_NAME)
        except FileNotFoundError:
            pass


def _first(ds: Dataset, shard_name: str) -> int:
    for s in ds.shards:
        if s.path.name == shard_name:
            return s.first
    return 0


def provenance_stamp() -> dict:
    """Who, when, where and with which plugin version a correction was made."""
    from napari_xrd import __version__

    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "user": _user(),
        "host": platform.node(),
        "os": platform.platform(terse=True),
        "plugin_version": __version__,
    }
