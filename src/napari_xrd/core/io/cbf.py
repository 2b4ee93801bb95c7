"""Pilatus / EIGER miniCBF frames, with geometry from the Pilatus header.

A miniCBF is a short CIF text block whose ``_array_data.header_contents``
holds Pilatus header lines (``# Pixel_size 172e-6 m x 172e-6 m``, ...),
then a MIME section and the binary image, usually ``x-CBF_BYTE_OFFSET``
compressed.  We parse the text and MIME headers ourselves, check the binary
length against ``X-Binary-Size`` (so a truncated file gives a clear error),
and let fabio's compiled byte-offset decoder do the decompression; other
CBF compressions go through ``fabio.cbfimage``.

Beam centre convention
----------------------
``Beam_xy (f, s) pixels`` is ``(fast, slow)``.  DIALS/dxtbx take
``Beam_xy * Pixel_size`` as the beam centre in mm from the outer corner of
the first pixel, so ``beam_center = Beam_xy`` in napari-xrd's corner
convention, with no half-pixel shift.

Masks
-----
Value ``-1`` marks gap pixels and ``-2`` bad pixels
(:func:`napari_xrd.core.masks.mask_from_values`); when the image size and
pixel size match a catalogue detector its module gaps are added too.
``Count_cutoff`` is reported as the saturation value (pixels at or above it
are counted, not masked).

Missing geometry
----------------
A CBF without the Pilatus geometry lines can still be looked at: by default
it opens with ``geometry=None`` and the missing keys listed in
``metadata["warnings"]``; ``require_geometry=True`` raises
:class:`ImageReadError` naming them instead.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from napari_xrd.core.detectors import get_detector, identify_detector
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io._files import compression_of, read_bytes
from napari_xrd.core.io.types import DiffractionImage, ImageReadError
from napari_xrd.core.masks import DEAD, mask_from_values

__all__ = ["is_cbf", "parse_pilatus_header", "pilatus_geometry", "read_cbf", "read_cbf_frame"]

BINARY_START = b"\x0c\x1a\x04\xd5"

_ELEMENT_TYPES = {
    "signed 8-bit integer": "i1",
    "unsigned 8-bit integer": "u1",
    "signed 16-bit integer": "i2",
    "unsigned 16-bit integer": "u2",
    "signed 32-bit integer": "i4",
    "unsigned 32-bit integer": "u4",
    "signed 64-bit integer": "i8",
    "unsigned 64-bit integer": "u8",
    "signed 32-bit real IEEE": "f4",
    "signed 64-bit real IEEE": "f8",
}

_NUM = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
_PILATUS = {
    "pixel_size": re.compile(rf"Pixel_size\s+{_NUM}\s*m\s*x\s*{_NUM}\s*m"),
    "distance": re.compile(rf"Detector_distance\s+{_NUM}\s*m"),
    "wavelength": re.compile(rf"Wavelength\s+{_NUM}\s*A"),
    "beam_xy": re.compile(rf"Beam_xy\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*pixels"),
    "exposure_time": re.compile(rf"Exposure_time\s+{_NUM}"),
    "exposure_period": re.compile(rf"Exposure_period\s+{_NUM}"),
    "count_cutoff": re.compile(rf"Count_cutoff\s+{_NUM}"),
    "start_angle": re.compile(rf"Start_angle\s+{_NUM}"),
    "angle_increment": re.compile(rf"Angle_increment\s+{_NUM}"),
    "threshold": re.compile(rf"Threshold_setting:?\s+{_NUM}"),
    "sensor_thickness": re.compile(rf"sensor,\s*thickness\s+{_NUM}\s*m"),
}
# header line -> geometry key it provides
GEOMETRY_KEYS = {
    "pixel_size": "Pixel_size",
    "distance": "Detector_distance",
    "wavelength": "Wavelength",
    "beam_xy": "Beam_xy",
}


def is_cbf(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) looks like a CBF."""
    return head.startswith(b"###CBF") or (
        head.lstrip().startswith((b"data_", b"#")) and b"_array_data" in head
    )


def parse_pilatus_header(text: str) -> dict:
    """Values of a Pilatus ``header_contents`` block.

    Returns
    -------
    dict
        Numbers under the keys of ``_PILATUS`` (``pixel_size`` and
        ``beam_xy`` as 2-tuples, SI units as written: m, s, deg, A), plus
        ``detector``, ``serial`` and ``timestamp`` strings when present.
    """
    values: dict = {}
    for key, pattern in _PILATUS.items():
        m = pattern.search(text)
        if m:
            nums = tuple(float(g) for g in m.groups())
            values[key] = nums if len(nums) > 1 else nums[0]
    m = re.search(r"#\s*Detector:\s*([^\r\n]*)", text)
    if m:
        detector = m.group(1).strip()
        values["detector"] = detector.split(",")[0].strip()
        sn = re.search(r"S/N\s*([\w.-]+)", detector)
        if sn:
            values["serial"] = sn.group(1)
    m = re.search(r"#\s*(\d{4}-\w{3}-\d{2}T[\d:.]+)", text)
    if m:
        values["timestamp"] = m.group(1)
    return values


def pilatus_geometry(values: dict, shape: tuple[int, int]) -> tuple[DetectorGeometry | None, list[str]]:
    """Geometry from :func:`parse_pilatus_header` values.

    Returns
    -------
    geometry : DetectorGeometry or None
    missing : list of str
        Header keys (``Pixel_size``, ``Detector_distance``, ``Wavelength``,
        ``Beam_xy``) that are absent or unusable.
    """
    missing = [name for key, name in GEOMETRY_KEYS.items() if key not in values]
    if not missing:
        if not values["pixel_size"][0] > 0:
            missing.append("Pixel_size")
        if not values["distance"] > 0:
            missing.append("Detector_distance")
        if not values["wavelength"] > 0:
            missing.append("Wavelength")
    if missing:
        return None, missing
    pixel_mm = values["pixel_size"][0] * 1e3
    detector = identify_detector(shape, pixel_mm)
    geometry = DetectorGeometry(
        shape=shape,
        pixel_size=pixel_mm,
        distance=values["distance"] * 1e3,
        beam_center=values["beam_xy"],
        wavelength=values["wavelength"],
        name=detector.name if detector is not None else values.get("detector", ""),
    )
    return geometry, []


def _mime(header: str, key: str) -> str | None:
    m = re.search(rf"{key}\s*[:=]\s*\"?([^\"\r\n;]+)\"?", header, flags=re.IGNORECASE)
    return m.group(1).strip() if m else None


def _split(path, raw: bytes) -> tuple[str, int, int]:
    """Text header, binary offset and binary size of a CBF (or its start)."""
    if not raw:
        raise ImageReadError(path, "empty file")
    start = raw.find(BINARY_START)
    if start < 0:
        raise ImageReadError(path, "no binary image section (truncated or not an image CBF)")
    header = raw[:start].decode("latin-1")
    size = _mime(header, "X-Binary-Size")
    if size is None or not size.isdigit():
        raise ImageReadError(path, "missing MIME header key X-Binary-Size")
    return header, start + len(BINARY_START), int(size)


def _truncated(path, size, got):
    return ImageReadError(path, f"truncated data: expected {size} bytes of compressed image, got {got}")


def _decode(path, header: str, binary: bytes) -> np.ndarray:
    """Decompress the binary section into a (n_slow, n_fast) array."""
    try:
        n_fast = int(_mime(header, "X-Binary-Size-Fastest-Dimension"))
        n_slow = int(_mime(header, "X-Binary-Size-Second-Dimension"))
    except (TypeError, ValueError):
        raise ImageReadError(path, "missing or bad MIME header keys X-Binary-Size-Fastest/Second-Dimension") from None
    element = _mime(header, "X-Binary-Element-Type")
    if element not in _ELEMENT_TYPES:
        raise ImageReadError(path, f"unsupported X-Binary-Element-Type {element!r}")
    dtype = np.dtype(_ELEMENT_TYPES[element])
    conversion = (_mime(header, "conversions") or "").lower()
    n = n_fast * n_slow
    if conversion == "x-cbf_byte_offset":
        from fabio.compression import decByteOffset

        data = decByteOffset(binary, size=n, dtype=dtype)
    elif conversion in ("", "none", "x-cbf_none"):
        data = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=n)
    else:  # packed and other rare compressions: let fabio do all of it
        return _fabio_read(path)
    if data.size != n:
        raise ImageReadError(path, f"image has {data.size} pixels, header says {n_fast} x {n_slow}")
    return data.reshape(n_slow, n_fast)


def _fabio_read(path) -> np.ndarray:
    from fabio.cbfimage import CbfImage

    try:
        return np.asarray(CbfImage().read(str(path)).data)
    except Exception as exc:  # fabio raises assorted types on corrupt files
        raise ImageReadError(path, f"fabio could not decode the image: {exc!r}") from None


def _load(path) -> tuple[str, np.ndarray]:
    try:
        if compression_of(path) is None:  # read the header, then exactly the binary
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
                if BINARY_START not in head:
                    head += fh.read()
                header, offset, size = _split(path, head)
                fh.seek(offset)
                binary = fh.read(size)
        else:
            raw = read_bytes(path)
            header, offset, size = _split(path, raw)
            binary = raw[offset : offset + size]
    except (OSError, EOFError) as exc:
        raise ImageReadError(path, f"cannot read file ({exc})") from None
    if len(binary) < size:
        raise _truncated(path, size, len(binary))
    return header, _decode(path, header, binary)


def read_cbf_frame(path) -> np.ndarray:
    """Pixel data of one CBF file, shape (n_slow, n_fast)."""
    return _load(str(path))[1]


@functools.lru_cache(maxsize=4)
def _catalogue_gaps(name: str) -> np.ndarray:
    """Read-only cached gap mask of a catalogue detector."""
    gaps = get_detector(name).gap_mask()
    gaps.setflags(write=False)
    return gaps


def _marker_mask(image: np.ndarray, gaps: np.ndarray | None = None, *, rows: int = 32) -> np.ndarray:
    """GAP at -1, DEAD at <= -2 (as :func:`mask_from_values`), OR-ed with ``gaps``.

    Written for speed on integer 6M-pixel frames, as it runs on every frame
    opened: blocks of ``rows`` rows keep the temporaries small and in cache.
    Other dtypes go through :func:`mask_from_values`.
    """
    if image.dtype.kind != "i":
        mask = mask_from_values(image)
        return mask if gaps is None else mask | gaps
    mask = np.empty(image.shape, dtype=np.uint32)
    negative = np.empty((rows, image.shape[1]), dtype=bool)
    for r0 in range(0, image.shape[0], rows):
        block = image[r0 : r0 + rows]
        neg = np.less(block, 0, out=negative[: len(block)])
        out = mask[r0 : r0 + rows]
        if gaps is None:
            out[...] = neg  # GAP == 1 on every negative pixel ...
        else:
            np.bitwise_or(gaps[r0 : r0 + rows], neg.view(np.uint8), out=out)
        dead = np.less_equal(block, -2, out=neg)  # ... but <= -2 is DEAD, not GAP
        if dead.any():
            out[dead] = DEAD if gaps is None else DEAD | gaps[r0 : r0 + rows][dead]
    return mask


def read_cbf(path, *, require_geometry: bool = False) -> DiffractionImage:
    """Read a Pilatus/EIGER miniCBF file (optionally ``.gz``/``.bz2``).

    Parameters
    ----------
    path : str or Path
    require_geometry : bool
        Raise :class:`ImageReadError` naming the missing header keys when
        the Pilatus geometry lines are absent (default: open with
        ``geometry=None`` and a note in ``metadata["warnings"]``).

    Returns
    -------
    DiffractionImage
        ``data`` shape (1, n_slow, n_fast) in the file's integer type.
    """
    path = str(path)
    header, image = _load(path)
    values = parse_pilatus_header(header)
    geometry, missing = pilatus_geometry(values, image.shape)
    metadata: dict = {"warnings": []}
    if geometry is None:
        problem = f"missing header key(s) {', '.join(missing)}: no detector geometry"
        if require_geometry:
            raise ImageReadError(path, problem)
        metadata["warnings"].append(problem)
    detector = identify_detector(image.shape, geometry.pixel_size if geometry else None)
    pixel_mask = _marker_mask(image, None if detector is None else _catalogue_gaps(detector.name))
    if "pixel_size" in values and abs(values["pixel_size"][0] - values["pixel_size"][1]) > 1e-9:
        metadata["warnings"].append(f"non-square pixels {values['pixel_size']} m: using the fast size")
    for key, name, scale in (
        ("detector", "detector", None),
        ("serial", "serial", None),
        ("timestamp", "date", None),
        ("exposure_time", "exposure_time_s", 1.0),
        ("exposure_period", "exposure_period_s", 1.0),
        ("start_angle", "oscillation_start_deg", 1.0),
        ("angle_increment", "oscillation_width_deg", 1.0),
        ("threshold", "threshold_eV", 1.0),
        ("sensor_thickness", "sensor_thickness_mm", 1e3),
    ):
        if key in values:
            metadata[name] = values[key] if scale is None else values[key] * scale
    if "count_cutoff" in values:
        cutoff = values["count_cutoff"]
        metadata["saturation_value"] = cutoff
        metadata["saturated_pixels"] = int(np.count_nonzero(image >= cutoff)) if image.max() >= cutoff else 0
    metadata["beam_center_convention"] = "Beam_xy (fast, slow) px = DIALS corner convention, no shift"
    metadata["header"] = [line.strip() for line in header.splitlines() if line.startswith("# ")]
    if not metadata["warnings"]:
        del metadata["warnings"]
    return DiffractionImage(
        data=image[np.newaxis],
        geometry=geometry,
        pixel_mask=pixel_mask,
        path=path,
        format="cbf",
        metadata=metadata,
    )
