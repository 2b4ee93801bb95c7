"""Pixel-mask conventions, in one place.

napari-xrd keeps masks as EIGER/NeXus-style ``pixel_mask`` bit fields
(``uint32``, 0 = good pixel):

======  =====  ==============================================
bit     value  meaning
======  =====  ==============================================
0       1      gap between modules
1       2      dead
2       4      cold (under-responding)
3       8      hot
4       16     noisy
8       256    user-defined (masked by hand, beamstop, ...)
======  =====  ==============================================

Readers translate format-specific markers into these bits:

* CBF (Pilatus/EIGER miniCBF): value -1 marks a gap pixel, -2 a bad one.
* EIGER data with the mask applied: invalid pixels hold ``2**bits - 1`` of
  the integer type (65535 for uint16, 4294967295 for uint32).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GAP",
    "DEAD",
    "COLD",
    "HOT",
    "NOISY",
    "USER",
    "BIT_NAMES",
    "mask_from_values",
    "valid_pixels",
    "describe_mask",
]

GAP = 1 << 0
DEAD = 1 << 1
COLD = 1 << 2
HOT = 1 << 3
NOISY = 1 << 4
USER = 1 << 8

BIT_NAMES = {GAP: "gap", DEAD: "dead", COLD: "cold", HOT: "hot", NOISY: "noisy", USER: "user"}


def mask_from_values(image: np.ndarray) -> np.ndarray:
    """Pixel mask implied by the marker values in an image.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        Raw detector values.

    Returns
    -------
    pixel_mask : (n_slow, n_fast) uint32 ndarray
        ``GAP`` where the value is -1, ``DEAD`` where it is -2 or below, or,
        for unsigned integer images, ``2**bits - 1``; ``DEAD`` also for
        non-finite floats.
    """
    image = np.asarray(image)
    mask = np.zeros(image.shape, dtype=np.uint32)
    if image.dtype.kind == "i":
        mask[image == -1] = GAP
        mask[image <= -2] |= DEAD
    elif image.dtype.kind == "u":
        mask[image == np.iinfo(image.dtype).max] |= DEAD
    elif image.dtype.kind == "f":
        mask[image == -1] = GAP
        mask[image <= -2] |= DEAD
        mask[~np.isfinite(image)] |= DEAD
    return mask


def valid_pixels(pixel_mask: np.ndarray | None, shape: tuple[int, int] | None = None, *,
                 image: np.ndarray | None = None) -> np.ndarray:
    """Boolean array, True where a pixel holds a usable measurement.

    ``pixel_mask`` may be None (every pixel valid; then ``shape`` is needed,
    or ``image``).  With ``image``, pixels whose value is not finite or is
    negative (detector markers) are invalid too.
    """
    if image is not None:
        image = np.asarray(image)
        valid = np.isfinite(image) & (image >= 0)
        return valid if pixel_mask is None else valid & (np.asarray(pixel_mask) == 0)
    if pixel_mask is None:
        if shape is None:
            raise ValueError("shape is required when pixel_mask is None")
        return np.ones(shape, dtype=bool)
    return np.asarray(pixel_mask) == 0


def describe_mask(pixel_mask: np.ndarray) -> dict[str, int]:
    """Count masked pixels per reason, e.g. ``{"gap": 1200, "dead": 3}``."""
    pm = np.asarray(pixel_mask).astype(np.uint32, copy=False)
    return {name: int(np.count_nonzero(pm & bit)) for bit, name in BIT_NAMES.items() if np.any(pm & bit)}
