"""ADSC / SMV (``.img``) frames, read by our own code.

An SMV file is a text header ``{ KEY=VALUE; ... }`` padded with spaces to
``HEADER_BYTES`` bytes, followed by ``SIZE2`` rows of ``SIZE1`` pixels
(``SIZE1`` runs along the fast axis).  ``BYTE_ORDER`` and ``TYPE`` give the
pixel encoding.

Beam centre convention
----------------------
ADSC headers give ``BEAM_CENTER_X`` and ``BEAM_CENTER_Y`` in mm, and on ADSC
detectors ``BEAM_CENTER_X`` runs along the *slow* axis: the beam centre
``(fast, slow)`` in pixels is ``(BEAM_CENTER_Y, BEAM_CENTER_X) /
PIXEL_SIZE``, measured from the outer corner of the first pixel (the DIALS
corner convention, no half-pixel shift).  This is how dxtbx's ADSC format
reads them; napari-xrd applies it to every SMV file.

Module seams
------------
The ADSC Quantum-4 is a 2 × 2 mosaic of CCDs; the image has zero-valued
lines where the fibre-optic tapers meet.  :func:`seam_mask` finds rows and
columns that are zero over most of their length and marks them ``GAP``.
Saturated pixels (at ``CCD_IMAGE_SATURATION``) are real, if clipped,
measurements: they are counted in the metadata, not masked.

Weak edges
----------
A CCD's outermost rows and columns often read far below the interior (on
the real Quantum-4 frame in ``sample_data`` the four edge lines read 0.27–0.75
of their neighbours).  :func:`weak_edge_mask` marks an edge line ``COLD``
when its signal above the pedestal is below 0.8 of that of the lines just
inside it, so
spot finders and fits do not take its step for a feature.
"""

from __future__ import annotations

import os

import numpy as np

from napari_xrd.core.detectors import identify_detector
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io._files import compression_of, read_bytes, read_head
from napari_xrd.core.io.types import DiffractionImage, ImageReadError
from napari_xrd.core.masks import COLD, GAP

__all__ = [
    "is_smv",
    "parse_smv_header",
    "read_smv_header",
    "smv_geometry",
    "seam_mask",
    "weak_edge_mask",
    "read_smv",
    "read_smv_frame",
]

GEOMETRY_KEYS = ("PIXEL_SIZE", "DISTANCE", "WAVELENGTH", "BEAM_CENTER_X", "BEAM_CENTER_Y")

_TYPES = {
    "unsigned_short": "u2",
    "unsigned_int": "u4",
    "unsigned_long": "u4",
    "signed_short": "i2",
    "short": "i2",
    "signed_int": "i4",
    "signed_long": "i4",
    "long": "i4",
    "int": "i4",
    "float": "f4",
    "float_ieee": "f4",
}


def is_smv(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) starts an SMV header."""
    start = head.lstrip()
    return start.startswith(b"{") and b"HEADER_BYTES" in start[:200]


def parse_smv_header(text: str) -> dict[str, str]:
    """``KEY=VALUE;`` pairs of an SMV header, values as stripped strings."""
    body = text.split("{", 1)[-1].split("}", 1)[0]
    header = {}
    for item in body.split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            header[key.strip()] = value.strip()
    return header


def read_smv_header(path, *, head: bytes | None = None) -> tuple[dict[str, str], int]:
    """Parse the header of an SMV file.

    Returns
    -------
    header : dict of str
        Keys and raw string values.
    header_bytes : int
        Offset of the pixel data.
    """
    head = read_head(path, 512) if head is None else head
    if not is_smv(head):
        raise ImageReadError(path, "not an SMV file (no '{ HEADER_BYTES=' header)")
    first = parse_smv_header(head.decode("latin-1"))
    try:
        header_bytes = int(first["HEADER_BYTES"])
    except (KeyError, ValueError):
        raise ImageReadError(path, "SMV header has no valid HEADER_BYTES") from None
    if not 0 < header_bytes < 1 << 20:
        raise ImageReadError(path, f"SMV header has an implausible HEADER_BYTES={header_bytes}")
    if header_bytes > len(head):
        head = read_head(path, header_bytes)
    if len(head) < header_bytes:
        raise ImageReadError(
            path, f"truncated header: expected {header_bytes} bytes, got {len(head)}"
        )
    text = head[:header_bytes].decode("latin-1")
    if "}" not in text:
        raise ImageReadError(path, f"SMV header does not close with '}}' within {header_bytes} bytes")
    return parse_smv_header(text), header_bytes


def _layout(path, header: dict[str, str]) -> tuple[tuple[int, int], np.dtype]:
    """(n_slow, n_fast) and dtype (with byte order) of the pixel data."""
    for key in ("SIZE1", "SIZE2"):
        if key not in header:
            raise ImageReadError(path, f"missing header key {key}")
    try:
        n_fast, n_slow = int(header["SIZE1"]), int(header["SIZE2"])
    except ValueError:
        raise ImageReadError(path, f"SIZE1={header['SIZE1']!r} / SIZE2={header['SIZE2']!r} are not integers") from None
    if n_fast < 1 or n_slow < 1:
        raise ImageReadError(path, f"image size {n_fast} x {n_slow} is empty")
    if header.get("DIM", "2") != "2":
        raise ImageReadError(path, f"only 2-D SMV images are supported, DIM={header['DIM']}")
    kind = header.get("TYPE", "unsigned_short").lower()
    if kind not in _TYPES:
        raise ImageReadError(path, f"unsupported pixel TYPE={kind!r}; known: {', '.join(sorted(_TYPES))}")
    order = header.get("BYTE_ORDER", "little_endian").lower()
    if order not in ("little_endian", "big_endian"):
        raise ImageReadError(path, f"unknown BYTE_ORDER={order!r}")
    dtype = np.dtype(("<" if order == "little_endian" else ">") + _TYPES[kind])
    return (n_slow, n_fast), dtype


def _float(header, key):
    try:
        return float(header[key])
    except (KeyError, ValueError):
        return None


def smv_geometry(header: dict[str, str], shape: tuple[int, int]) -> tuple[DetectorGeometry | None, list[str]]:
    """Detector geometry from an SMV header (ADSC beam-centre convention).

    Returns
    -------
    geometry : DetectorGeometry or None
        None when a geometry key is missing or not a number.
    missing : list of str
        The missing or unusable keys.
    """
    values = {key: _float(header, key) for key in GEOMETRY_KEYS}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        return None, missing
    pixel = values["PIXEL_SIZE"]
    bad = [k for k in ("PIXEL_SIZE", "DISTANCE", "WAVELENGTH") if not values[k] > 0]
    if bad:
        return None, bad
    detector = identify_detector(shape, pixel)
    geometry = DetectorGeometry(
        shape=shape,
        pixel_size=pixel,
        distance=values["DISTANCE"],
        beam_center=(values["BEAM_CENTER_Y"] / pixel, values["BEAM_CENTER_X"] / pixel),
        wavelength=values["WAVELENGTH"],
        name=detector.name if detector is not None else "",
    )
    return geometry, []


def weak_edge_mask(image: np.ndarray, *, max_depth: int = 2, ratio: float = 0.8) -> np.ndarray:
    """``COLD`` on the outermost rows/columns whose response is well below the interior's.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
    max_depth : int
        Lines checked from each edge inwards; checking stops at the first
        line that reads normally.
    ratio : float
        An edge line is weak when its median, above the frame's pedestal
        (its 0.5th percentile of positive pixels), is below ``ratio`` times
        that of the next four lines inwards.

    Returns
    -------
    pixel_mask : (n_slow, n_fast) uint32 ndarray
    """
    img = np.asarray(image)
    mask = np.zeros(img.shape, dtype=np.uint32)
    n_slow, n_fast = img.shape
    if min(n_slow, n_fast) < 4 * (max_depth + 4):
        return mask
    lines = {
        "top": lambda i: img[i, :],
        "bottom": lambda i: img[n_slow - 1 - i, :],
        "left": lambda i: img[:, i],
        "right": lambda i: img[:, n_fast - 1 - i],
    }
    # CCDs read a pedestal where no photons arrive: compare the signal above it
    positive = img[img > 0]
    base = float(np.percentile(positive[:: max(1, positive.size // 200000)], 0.5)) if positive.size else 0.0
    for side, line in lines.items():
        for depth in range(max_depth):
            inner = float(np.median(np.concatenate([line(depth + k) for k in range(1, 5)]))) - base
            if inner <= 0 or float(np.median(line(depth))) - base >= ratio * inner:
                break
            if side == "top":
                mask[depth, :] |= COLD
            elif side == "bottom":
                mask[n_slow - 1 - depth, :] |= COLD
            elif side == "left":
                mask[:, depth] |= COLD
            else:
                mask[:, n_fast - 1 - depth] |= COLD
    return mask


def seam_mask(image: np.ndarray, *, min_fraction: float = 0.9) -> np.ndarray:
    """``GAP`` on rows and columns that are zero over most of their length.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        One frame.
    min_fraction : float
        A line is a seam when at least this fraction of its pixels is 0.

    Returns
    -------
    pixel_mask : (n_slow, n_fast) uint32 ndarray
        ``GAP`` on every pixel of a seam line, 0 elsewhere; all zero when
        more than half of the image is 0 (seams cannot be told apart).
    """
    zero = np.asarray(image) == 0
    mask = np.zeros(zero.shape, dtype=np.uint32)
    if zero.mean() > 0.5:  # a mostly empty (photon-counting-like) image: no seams to tell apart
        return mask
    mask[zero.mean(axis=1) >= min_fraction, :] = GAP
    mask[:, zero.mean(axis=0) >= min_fraction] = GAP
    return mask


def _pixels(path, header, header_bytes, *, memmap: bool):
    """The frame as a 2-D array in native byte order."""
    shape, dtype = _layout(path, header)
    expected = header_bytes + shape[0] * shape[1] * dtype.itemsize
    if memmap and compression_of(path) is None:
        size = os.stat(path).st_size
        if size < expected:
            raise ImageReadError(
                path, f"truncated data: expected {expected} bytes ({header_bytes} header + "
                f"{shape[1]} x {shape[0]} {dtype.name}), got {size}"
            )
        data = np.memmap(path, dtype=dtype, mode="r", offset=header_bytes, shape=shape)
    else:
        try:
            raw = read_bytes(path)
        except (OSError, EOFError) as exc:
            raise ImageReadError(path, f"corrupt compressed file ({exc})") from None
        if len(raw) < expected:
            raise ImageReadError(
                path, f"truncated data: expected {expected} bytes ({header_bytes} header + "
                f"{shape[1]} x {shape[0]} {dtype.name}), got {len(raw)}"
            )
        data = np.frombuffer(raw, dtype=dtype, count=shape[0] * shape[1], offset=header_bytes)
        data = data.reshape(shape)
    if not dtype.isnative:
        data = data.astype(dtype.newbyteorder("="))
    return data


def read_smv_frame(path) -> np.ndarray:
    """Pixel data of one SMV file, shape (n_slow, n_fast), native byte order."""
    header, header_bytes = read_smv_header(path)
    return np.asarray(_pixels(path, header, header_bytes, memmap=False))


def read_smv(path, *, require_geometry: bool = False) -> DiffractionImage:
    """Read an ADSC/SMV ``.img`` file (optionally ``.gz``/``.bz2``).

    Parameters
    ----------
    path : str or Path
    require_geometry : bool
        Raise :class:`ImageReadError` naming the missing keys when the header
        lacks geometry; by default the image opens with ``geometry=None``
        and a note in ``metadata["warnings"]``.

    Returns
    -------
    DiffractionImage
        ``data`` shape (1, n_slow, n_fast): a read-only memory map for an
        uncompressed native-order file, otherwise an in-memory array in
        native byte order.  ``pixel_mask`` marks module seams as ``GAP`` and
        weak edge lines as ``COLD``.
    """
    path = str(path)
    header, header_bytes = read_smv_header(path)
    image = _pixels(path, header, header_bytes, memmap=True)
    shape = image.shape
    geometry, missing = smv_geometry(header, shape)
    warnings = []
    if geometry is None:
        problem = f"missing or unusable header key(s) {', '.join(missing)}: no detector geometry"
        if require_geometry:
            raise ImageReadError(path, problem)
        warnings.append(problem)
    two_theta = _float(header, "TWOTHETA")
    if two_theta is not None and abs(two_theta) > 0.1:
        warnings.append(f"detector two-theta swing {two_theta} deg is not modelled")
    pixel_mask = seam_mask(image)
    edges = weak_edge_mask(image)
    pixel_mask |= edges
    metadata = {
        "detector": "ADSC" + (f" S/N {header['DETECTOR_SN']}" if "DETECTOR_SN" in header else ""),
        "serial": header.get("DETECTOR_SN"),
        "exposure_time_s": _float(header, "TIME"),
        "oscillation_start_deg": _float(header, "OSC_START"),
        "oscillation_width_deg": _float(header, "OSC_RANGE"),
        "date": header.get("DATE"),
        "beam_center_convention": "ADSC: fast = BEAM_CENTER_Y, slow = BEAM_CENTER_X (mm / PIXEL_SIZE)",
        "seam_pixels": int(np.count_nonzero(pixel_mask & GAP)),
        "weak_edge_pixels": int(np.count_nonzero(edges)),
        "header": header,
    }
    saturation = _float(header, "CCD_IMAGE_SATURATION")
    if saturation is not None:
        metadata["saturation_value"] = saturation
        metadata["saturated_pixels"] = int(np.count_nonzero(image >= saturation))
    if warnings:
        metadata["warnings"] = warnings
    return DiffractionImage(
        data=image[np.newaxis],
        geometry=geometry,
        pixel_mask=pixel_mask,
        path=path,
        format="smv",
        metadata=metadata,
    )
