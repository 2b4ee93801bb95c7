"""EIGER NeXus/HDF5 master files, read lazily; and an EIGER-like writer.

Layout (as written by DECTRIS EIGER detectors and read by DIALS)::

    master.h5
      /entry/data/data_000001 -> ExternalLink("x_data_000001.h5", "/entry/data/data")
      /entry/data/data_000002 -> ...
      /entry/instrument/beam/incident_wavelength          (angstrom)
      /entry/instrument/detector/x_pixel_size, y_pixel_size (m)
      /entry/instrument/detector/detector_distance        (m)
      /entry/instrument/detector/beam_center_x, _y        (pixel)
      /entry/instrument/detector/count_time, description, detector_number,
                                 bit_depth_image
      /entry/instrument/detector/detectorSpecific/pixel_mask (uint32 bits)
      /entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff
      /entry/sample/goniometer/omega, omega_range_average  (deg)
    x_data_000001.h5
      /entry/data/data   (n, n_slow, n_fast), one chunk per frame,
                         bitshuffle-LZ4 compressed (HDF5 filter 32008)

Units attributes are honoured when present (m, mm, um for lengths;
angstrom, nm, m for the wavelength).  ``beam_center_x/_y`` are ``(fast,
slow)`` pixels from the outer corner of the first pixel, as dxtbx reads
them (DIALS corner convention, no shift).

Laziness
--------
``data`` is a dask array with one chunk per frame; a frame is read from its
data file only when computed.  File handles are opened on first use and the 16
most recently used kept open; every HDF5 call goes through one module-wide lock, so dask may run
chunks in threads.  The first frame is read when the file is opened (to flag
pixels holding ``2**bit_depth - 1``, EIGER's marker for invalid pixels) and
handed to the first request for it, so it is not read twice.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from napari_xrd.core.detectors import identify_detector
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io.types import DiffractionImage, ImageReadError
from napari_xrd.core.masks import DEAD

__all__ = ["is_hdf5", "looks_like_nexus_image", "read_nexus", "write_nexus"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HDF5_LOCK = threading.RLock()  # h5py is not safe to call from several threads at once

_LENGTH_MM = {"m": 1e3, "meter": 1e3, "metre": 1e3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0,
              "um": 1e-3, "micron": 1e-3, "microns": 1e-3, "µm": 1e-3}
_WAVELENGTH_A = {"angstrom": 1.0, "a": 1.0, "å": 1.0, "nm": 10.0, "m": 1e10, "pm": 1e-2}


def is_hdf5(head: bytes) -> bool:
    """True if ``head`` starts with the HDF5 signature."""
    return head.startswith(HDF5_MAGIC)


def looks_like_nexus_image(path) -> bool | None:
    """Cheap check that an HDF5 file has an ``/entry/data`` image group.

    Returns True or False, or None when the file cannot be opened as HDF5
    at all (truncated, corrupt).  Does not follow external links; never
    raises.
    """
    try:
        import h5py

        with HDF5_LOCK:
            try:
                f = h5py.File(path, "r")
            except OSError:
                return None
            with f:
                entry = f.get("entry")
                return isinstance(entry, h5py.Group) and "data" in entry
    except Exception:  # any other failure means "not ours"
        return False


# ---------------------------------------------------------------- reading
@dataclass
class _Part:
    """One dataset holding consecutive frames."""

    filename: str
    dataset: str
    n_frames: int


class _NexusFrames:
    """Array-like over the frames of all data files, for :func:`dask.array.from_array`.

    Frame ``i`` is read from its part (data file and dataset) when asked
    for.  Up to ``max_open`` files are kept open (least recently used
    closed first); every HDF5 call runs under :data:`HDF5_LOCK`.  ``first``
    is a frame already read, handed out once.
    """

    max_open = 16

    def __init__(self, parts, frame_shape, dtype, first=None):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [p.n_frames for p in self.parts])
        self.shape = (int(self.offsets[-1]),) + tuple(frame_shape)
        self.dtype, self.ndim = np.dtype(dtype), 3
        self._files = OrderedDict()
        self._first = first

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def _dataset(self, k):
        import h5py

        part = self.parts[k]
        handle = self._files.pop(k, None)
        if handle is None:
            try:
                handle = h5py.File(part.filename, "r")
            except OSError as exc:
                raise ImageReadError(part.filename, f"cannot open data file ({exc})") from None
            while len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[k] = handle
        return handle[part.dataset]

    def _read(self, i, rest):
        """Frame ``i`` (cropped by ``rest``), read from its data file."""
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        with HDF5_LOCK:
            if i == 0 and self._first is not None:
                first, self._first = self._first, None  # served once: the caller owns it
                return first[rest]
            part = self.parts[k]
            try:
                ds = self._dataset(k)
                if ds.ndim == 2:  # a single image stored 2-D
                    return ds[rest]
                return ds[(i - int(self.offsets[k]),) + rest]
            except (OSError, KeyError, ValueError) as exc:
                raise ImageReadError(part.filename, f"cannot read frame {i} from {part.dataset} ({exc})") from None

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        k0, rest = key[0], tuple(key[1:])
        if isinstance(k0, slice):
            return np.stack([self._read(i, rest) for i in range(self.shape[0])[k0]])
        return self._read(range(self.shape[0])[k0], rest)


def _value(group, name, default=None):
    """Scalar value of ``group[name]`` (str for strings), or default."""
    ds = group.get(name) if group is not None else None
    if ds is None or not hasattr(ds, "shape"):
        return default
    value = ds[()]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return default
        value = value.ravel()[0]
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value


def _units(group, name) -> str:
    ds = group.get(name) if group is not None else None
    if ds is None:
        return ""
    units = ds.attrs.get("units", b"")
    if isinstance(units, bytes):
        units = units.decode()
    return str(units).strip().lower()


def _scaled(group, name, table, default_unit):
    value = _value(group, name)
    if value is None:
        return None
    unit = _units(group, name) or default_unit
    if unit not in table:
        raise ValueError(f"{name} has unknown units {unit!r}")
    return float(value) * table[unit]


def _check_virtual(path, ds, base):
    """A virtual dataset (VDS) whose source files are missing would read as
    zeros without complaint: name the first missing source instead."""
    if not ds.is_virtual:
        return
    for source in ds.virtual_sources():
        name = source.file_name
        if name == ".":  # source in the same file
            continue
        target = name if os.path.isabs(name) else os.path.join(base, name)
        if not os.path.exists(target):
            raise ImageReadError(path, f"dangling virtual dataset {ds.name}: source file {name} not found "
                                 f"(looked for {target})")


def _find_parts(path, f) -> list[_Part]:
    """The datasets holding the frames, following (and checking) links."""
    import h5py

    base = os.path.dirname(os.path.abspath(path))
    group = f.get("entry/data")
    if not isinstance(group, h5py.Group):
        raise ImageReadError(path, "no /entry/data group: not a NeXus image file")
    names = sorted(n for n in group if n.startswith("data"))
    if not names:
        raise ImageReadError(path, "/entry/data holds no data_* datasets: not an image file")
    parts = []
    for name in names:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            target = os.path.join(base, link.filename)
            if not os.path.exists(target):
                raise ImageReadError(
                    path, f"dangling external link /entry/data/{name} -> {link.filename}:{link.path} "
                    f"(data file {target} not found)"
                )
            try:
                with h5py.File(target, "r") as g:
                    ds = g.get(link.path)
                    if not isinstance(ds, h5py.Dataset):
                        raise ImageReadError(path, f"external link /entry/data/{name}: {link.path} not found in {target}")
                    _check_virtual(path, ds, os.path.dirname(target))
                    parts.append((_Part(target, link.path, 0), ds.shape, ds.dtype))
            except OSError as exc:
                raise ImageReadError(path, f"external link /entry/data/{name}: cannot open {target} ({exc})") from None
        else:
            try:
                ds = group[name]
            except (KeyError, OSError) as exc:
                raise ImageReadError(path, f"cannot resolve /entry/data/{name} ({exc})") from None
            if not isinstance(ds, h5py.Dataset):
                continue
            _check_virtual(path, ds, base)
            parts.append((_Part(ds.file.filename, ds.name, 0), ds.shape, ds.dtype))
    out = []
    for part, shape, dtype in parts:
        if np.dtype(dtype).kind not in "iuf" or len(shape) not in (2, 3):
            raise ImageReadError(path, f"{part.dataset} in {part.filename} is not an image dataset "
                                 f"(shape {shape}, dtype {dtype})")
        part.n_frames = 1 if len(shape) == 2 else shape[0]
        out.append((part, tuple(shape[-2:]), np.dtype(dtype)))
    shapes = {s for _, s, _ in out}
    if len(shapes) > 1:
        raise ImageReadError(path, f"data files disagree on the frame shape: {sorted(shapes)}")
    return out


def _geometry(path, det, beam, shape, warnings, require):
    pixel = _scaled(det, "x_pixel_size", _LENGTH_MM, "m")
    distance = _scaled(det, "detector_distance", _LENGTH_MM, "m")
    if distance is None:
        distance = _scaled(det, "distance", _LENGTH_MM, "m")
    wavelength = _scaled(beam, "incident_wavelength", _WAVELENGTH_A, "angstrom")
    if wavelength is None:
        wavelength = _scaled(beam, "wavelength", _WAVELENGTH_A, "angstrom")
    bx, by = _value(det, "beam_center_x"), _value(det, "beam_center_y")
    found = {
        "detector/x_pixel_size": pixel,
        "detector/detector_distance": distance,
        "beam/incident_wavelength": wavelength,
        "detector/beam_center_x": bx,
        "detector/beam_center_y": by,
    }
    missing = [f"/entry/instrument/{k}" for k, v in found.items() if v is None]
    if missing:
        problem = f"missing header key(s) {', '.join(missing)}: no detector geometry"
        if require:
            raise ImageReadError(path, problem)
        warnings.append(problem)
        return None
    unit = _units(det, "beam_center_x")
    centre = (float(bx), float(by))
    if unit in _LENGTH_MM:  # beam centre given in length units
        centre = tuple(c * _LENGTH_MM[unit] / pixel for c in centre)
    elif unit not in ("", "pixel", "pixels"):
        warnings.append(f"beam_center_x has unknown units {unit!r}; read as pixels")
    detector = identify_detector(shape, pixel)
    try:
        return DetectorGeometry(shape=shape, pixel_size=pixel, distance=distance, beam_center=centre,
                                wavelength=wavelength, name=detector.name if detector else "")
    except ValueError as exc:
        if require:
            raise ImageReadError(path, f"unusable geometry ({exc})") from None
        warnings.append(f"unusable geometry ({exc})")
        return None


def read_nexus(path, *, require_geometry: bool = False) -> DiffractionImage:
    """Open an EIGER NeXus master (or data) file lazily.

    Parameters
    ----------
    path : str or Path
    require_geometry : bool
        Raise :class:`ImageReadError` naming the missing keys when the file
        has no geometry (default: ``geometry=None`` and a warning in
        ``metadata["warnings"]``).

    Returns
    -------
    DiffractionImage
        ``data`` is a dask array (n_frames, n_slow, n_fast), one chunk per
        frame.  ``pixel_mask`` is ``detectorSpecific/pixel_mask`` with its
        bits as stored, plus ``DEAD`` on unflagged pixels where the first
        frame holds ``2**bit_depth - 1``.
    """
    import dask.array as da
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters)
    from dask.base import tokenize

    path = str(path)
    warnings: list[str] = []
    try:
        with HDF5_LOCK, h5py.File(path, "r") as f:
            parts = _find_parts(path, f)
            shape = parts[0][1]
            dtype = parts[0][2]
            det = f.get("entry/instrument/detector")
            beam = f.get("entry/instrument/beam")
            try:
                geometry = _geometry(path, det, beam, shape, warnings, require_geometry)
            except ImageReadError:
                raise
            except ValueError as exc:  # unknown units
                if require_geometry:
                    raise ImageReadError(path, str(exc)) from None
                geometry = None
                warnings.append(f"{exc}: no detector geometry")
            spec = det.get("detectorSpecific") if det is not None else None
            pixel_mask = None
            if spec is not None and "pixel_mask" in spec:
                pixel_mask = np.asarray(spec["pixel_mask"][()], dtype=np.uint32)
                if pixel_mask.shape != shape:
                    warnings.append(f"pixel_mask shape {pixel_mask.shape} differs from frames {shape}; ignored")
                    pixel_mask = None
            metadata = _metadata(f, det, spec)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read HDF5 file ({exc})") from None
    frames = _NexusFrames([p for p, _, _ in parts], shape, dtype)
    first = np.asarray(frames[0])
    frames._first = first
    data = da.from_array(frames, chunks=(1,) + shape, asarray=False, lock=False,
                         name=f"nexus-{tokenize(path, [p.filename for p, _, _ in parts])}",
                         meta=np.empty((0, 0, 0), dtype))
    metadata["data_files"] = [os.path.basename(p.filename) for p, _, _ in parts]
    if dtype.kind == "u":
        bits = int(metadata.get("bit_depth_image") or 8 * dtype.itemsize)
        invalid = first == (1 << bits) - 1 if bits <= 8 * dtype.itemsize else np.zeros(shape, bool)
        if pixel_mask is None:
            pixel_mask = np.zeros(shape, dtype=np.uint32)
        invalid &= pixel_mask == 0  # already-flagged pixels keep their bits
        n_invalid = int(np.count_nonzero(invalid))
        if n_invalid:
            pixel_mask[invalid] |= DEAD
        metadata["invalid_value"] = (1 << bits) - 1
        metadata["invalid_pixels_first_frame"] = n_invalid
    if warnings:
        metadata["warnings"] = warnings
    return DiffractionImage(data=data, geometry=geometry, pixel_mask=pixel_mask, path=path,
                            format="nexus", metadata=metadata)


def _metadata(f, det, spec) -> dict:
    meta: dict = {}
    for key, name in (("description", "detector"), ("detector_number", "serial"),
                      ("count_time", "exposure_time_s"), ("frame_time", "frame_time_s"),
                      ("bit_depth_image", "bit_depth_image"), ("sensor_material", "sensor_material")):
        value = _value(det, key)
        if value is not None:
            meta[name] = value
    for key in ("countrate_correction_count_cutoff", "saturation_value"):
        value = _value(spec, key)
        if value is not None:
            meta["saturation_value"] = value
            break
    gonio = f.get("entry/sample/goniometer")
    omega = gonio.get("omega") if gonio is not None else None
    if omega is not None and omega.size:
        meta["oscillation_start_deg"] = float(np.ravel(omega[()])[0])
        width = _value(gonio, "omega_range_average")
        if width is None and omega.size > 1:
            width = float(np.ravel(omega[()])[1] - np.ravel(omega[()])[0])
        if width is not None:
            meta["oscillation_width_deg"] = float(width)
    return meta


# ---------------------------------------------------------------- writing
def _filter(compression):
    import hdf5plugin

    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if compression is None:
        return {}
    raise ValueError(f"compression must be 'bslz4', 'lz4', 'gzip' or None, got {compression!r}")


def _scalar(group, name, value, units=None):
    ds = group.create_dataset(name, data=value)
    if units:
        ds.attrs["units"] = units
    return ds


def write_nexus(
    path,
    frames,
    geometry: DetectorGeometry | None,
    pixel_mask: np.ndarray | None = None,
    *,
    frames_per_file: int = 100,
    compression: str | None = "bslz4",
    exposure_time: float = 0.1,
    oscillation: tuple[float, float] | None = None,
    saturation_value: int | None = None,
    description: str = "Dectris EIGER",
    serial: str = "E-00-0000",
    progress=None,
) -> list[str]:
    """Write frames as an EIGER-style master file plus external data files.

    Parameters
    ----------
    path : str or Path
        The master file, e.g. ``run_master.h5``; data files are written
        beside it as ``run_data_000001.h5``, ... (``_master`` dropped).
    frames : array-like, shape (n_frames, n_slow, n_fast) or (n_slow, n_fast)
        Read one frame at a time (a NumPy, memory-mapped or dask array, or
        any object with ``shape``, ``dtype`` and frame indexing).
    geometry : DetectorGeometry or None
        Written as EIGER header values (metres, pixels, Å); None writes no
        geometry.
    pixel_mask : (n_slow, n_fast) uint32 ndarray, optional
        ``detectorSpecific/pixel_mask``.
    frames_per_file : int
        Frames per data file (EIGER's ``nimages_per_file``).
    compression : {"bslz4", "lz4", "gzip", None}
        HDF5 filter for the frames (and the pixel mask).
    exposure_time : float
        ``count_time`` in s.
    oscillation : (start, width) in degrees, optional
        Written as ``/entry/sample/goniometer/omega``.
    saturation_value : int, optional
        ``countrate_correction_count_cutoff``.
    description, serial : str
        Detector description and ``detector_number``.
    progress : callable(done, total, msg), optional

    Returns
    -------
    list of str
        The master file followed by the data files written.
    """
    import h5py

    filters = _filter(compression)
    path = os.fspath(path)
    shape = tuple(frames.shape)
    if len(shape) == 2:
        frames, shape = frames[np.newaxis], (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"frames must be (n_frames, n_slow, n_fast), got shape {shape}")
    n_frames, n_slow, n_fast = shape
    dtype = np.dtype(frames.dtype)
    if frames_per_file < 1:
        raise ValueError(f"frames_per_file must be >= 1, got {frames_per_file}")
    directory, name = os.path.split(os.path.abspath(path))
    stem = name[:-3] if name.endswith(".h5") else os.path.splitext(name)[0]
    stem = stem[: -len("_master")] if stem.endswith("_master") else stem
    written = [os.path.abspath(path)]
    with HDF5_LOCK, h5py.File(path, "w") as m:
        m.attrs["default"] = "entry"
        entry = m.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        _scalar(entry, "definition", "NXmx")
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        spec = det.create_group("detectorSpecific")
        spec.attrs["NX_class"] = "NXcollection"
        bits = 8 * dtype.itemsize
        _scalar(det, "description", description)
        _scalar(det, "detector_number", serial)
        _scalar(det, "count_time", float(exposure_time), "s")
        _scalar(det, "frame_time", float(exposure_time), "s")
        _scalar(det, "bit_depth_image", np.uint32(bits))
        _scalar(det, "sensor_material", "Si")
        _scalar(spec, "nimages", np.uint32(n_frames))
        _scalar(spec, "ntrigger", np.uint32(1))
        _scalar(spec, "x_pixels_in_detector", np.uint32(n_fast))
        _scalar(spec, "y_pixels_in_detector", np.uint32(n_slow))
        if saturation_value is not None:
            _scalar(spec, "countrate_correction_count_cutoff", np.uint32(saturation_value), "counts")
        if geometry is not None:
            if tuple(geometry.shape) != (n_slow, n_fast):
                raise ValueError(f"geometry shape {geometry.shape} does not match frames {(n_slow, n_fast)}")
            _scalar(det, "x_pixel_size", geometry.pixel_size * 1e-3, "m")
            _scalar(det, "y_pixel_size", geometry.pixel_size * 1e-3, "m")
            _scalar(det, "detector_distance", geometry.distance * 1e-3, "m")
            _scalar(det, "beam_center_x", geometry.beam_center[0], "pixel")
            _scalar(det, "beam_center_y", geometry.beam_center[1], "pixel")
            beam = inst.create_group("beam")
            beam.attrs["NX_class"] = "NXbeam"
            _scalar(beam, "incident_wavelength", geometry.wavelength, "angstrom")
        if pixel_mask is not None:
            pm = np.asarray(pixel_mask, dtype=np.uint32)
            if pm.shape != (n_slow, n_fast):
                raise ValueError(f"pixel_mask shape {pm.shape} does not match frames {(n_slow, n_fast)}")
            spec.create_dataset("pixel_mask", data=pm, chunks=pm.shape, **filters)
        if oscillation is not None:
            sample = entry.create_group("sample")
            sample.attrs["NX_class"] = "NXsample"
            gonio = sample.create_group("goniometer")
            gonio.attrs["NX_class"] = "NXtransformations"
            start, width = (float(v) for v in oscillation)
            _scalar(gonio, "omega", start + width * np.arange(n_frames), "deg")
            _scalar(gonio, "omega_range_average", width, "deg")
        n_files = -(-n_frames // frames_per_file)
        for k in range(n_files):
            lo, hi = k * frames_per_file, min(n_frames, (k + 1) * frames_per_file)
            fname = f"{stem}_data_{k + 1:06d}.h5"
            with h5py.File(os.path.join(directory, fname), "w") as d:
                e = d.create_group("entry")
                e.attrs["NX_class"] = "NXentry"
                g = e.create_group("data")
                g.attrs["NX_class"] = "NXdata"
                ds = g.create_dataset("data", shape=(hi - lo, n_slow, n_fast), dtype=dtype,
                                      chunks=(1, n_slow, n_fast), **filters)
                ds.attrs["image_nr_low"] = np.uint32(lo + 1)
                ds.attrs["image_nr_high"] = np.uint32(hi)
                for i in range(lo, hi):
                    ds[i - lo] = np.asarray(frames[i], dtype=dtype)
                    if progress is not None:
                        progress(i + 1, n_frames, f"writing {fname}")
            data[f"data_{k + 1:06d}"] = h5py.ExternalLink(fname, "/entry/data/data")
            written.append(os.path.join(directory, fname))
    return written
