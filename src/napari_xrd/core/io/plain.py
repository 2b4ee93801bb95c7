"""TIFF and ``.npy`` files as plain images, without geometry.

Accepted arrays are real numbers (integer or float) of shape
``(n_slow, n_fast)`` or ``(n_frames, n_slow, n_fast)``.  ``.npy`` files are
memory-mapped, TIFF files are memory-mapped when stored uncompressed and
contiguous, otherwise read whole.  NaNs are allowed in float images: they
are masked ``DEAD`` (with -1 → ``GAP`` and ≤ -2 → ``DEAD``, see
:func:`napari_xrd.core.masks.mask_from_values`), computed on the first frame.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.io.types import DiffractionImage, ImageReadError
from napari_xrd.core.masks import mask_from_values

__all__ = ["is_tiff", "is_npy", "check_image_array", "read_tiff", "read_npy"]

NPY_MAGIC = b"\x93NUMPY"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(head: bytes) -> bool:
    """True if ``head`` starts with a (Big)TIFF signature."""
    return head.startswith(TIFF_MAGICS)


def is_npy(head: bytes) -> bool:
    """True if ``head`` starts with the NumPy ``.npy`` signature."""
    return head.startswith(NPY_MAGIC)


def check_image_array(data, path) -> np.ndarray | object:
    """Check dtype and shape of an image array; return it as 3-D.

    Parameters
    ----------
    data : array-like
        Shape (n_slow, n_fast) or (n_frames, n_slow, n_fast).
    path : str
        Named in the error message.

    Raises
    ------
    ImageReadError
        For non-numeric, boolean or complex dtypes, or other shapes.
    """
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "iuf":
        raise ImageReadError(
            path, f"wrong dtype {dtype}: a diffraction image must hold integer or real numbers"
        )
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise ImageReadError(
            path, f"wrong shape {tuple(data.shape)}: expected (n_slow, n_fast) or (n_frames, n_slow, n_fast)"
        )
    if min(data.shape) < 1:
        raise ImageReadError(path, f"empty image, shape {tuple(data.shape)}")
    return data


def _plain(data, path, fmt, metadata) -> DiffractionImage:
    data = check_image_array(data, path)
    first = np.asarray(data[0])
    pixel_mask = mask_from_values(first)
    if first.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(first)))
        if n_nan:
            metadata["nan_pixels"] = n_nan
            metadata.setdefault("warnings", []).append(
                f"{n_nan} NaN pixel(s) in the first frame, masked as dead"
            )
    if data.shape[0] > 1:
        metadata["mask_from"] = "first frame"
    return DiffractionImage(
        data=data,
        geometry=None,
        pixel_mask=pixel_mask if pixel_mask.any() else None,
        path=str(path),
        format=fmt,
        metadata=metadata,
    )


def read_npy(path) -> DiffractionImage:
    """Read a ``.npy`` array (memory-mapped) as a plain image."""
    path = str(path)
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays, bad headers
        raise ImageReadError(path, f"not a numeric .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ImageReadError(path, f"cannot read .npy file ({exc})") from None
    return _plain(data, path, "npy", {})


def read_tiff(path) -> DiffractionImage:
    """Read a TIFF (single image or multi-page stack) as a plain image."""
    import tifffile

    path = str(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
            try:
                data = tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or not contiguous
                data = series.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise ImageReadError(path, f"cannot read TIFF ({exc})") from None
    if "S" in axes or (axes.endswith("C") and shape[-1] in (3, 4)):
        raise ImageReadError(path, f"colour image (shape {tuple(shape)}, axes {axes}), not a detector frame")
    return _plain(data, path, "tiff", {"tiff_axes": axes})
