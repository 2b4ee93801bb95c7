"""The container every reader returns, and the error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry

__all__ = ["DiffractionImage", "ImageReadError"]


class ImageReadError(ValueError):
    """A file that a reader claims but cannot read.

    The message always names the file and says what is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class DiffractionImage:
    """One diffraction image or a stack of frames, with its geometry.

    Attributes
    ----------
    data : array-like, shape (n_frames, n_slow, n_fast)
        Raw detector values, always 3-D (a single image has ``n_frames=1``).
        A NumPy array, or a dask array for lazily read stacks.
    geometry : DetectorGeometry or None
        None for formats without geometry (TIFF, .npy).
    pixel_mask : (n_slow, n_fast) uint32 ndarray or None
        EIGER-style bit mask (see :mod:`napari_xrd.core.masks`), 0 = good.
    path : str
        The file (or first file of a series) the data came from.
    format : str
        Short format name: "cbf", "smv", "nexus", "tiff", "npy", ...
    metadata : dict
        Header values worth showing (exposure time, oscillation, detector
        serial, saturation value, ...), JSON-serialisable.
    """

    data: Any
    geometry: DetectorGeometry | None
    pixel_mask: np.ndarray | None
    path: str
    format: str
    metadata: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.data.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def frame(self, index: int = 0) -> np.ndarray:
        """Frame ``index`` as an in-memory NumPy array, shape (n_slow, n_fast)."""
        if not -self.n_frames <= index < self.n_frames:
            raise IndexError(f"{self.path}: frame {index} out of range (0..{self.n_frames - 1})")
        f = self.data[index]
        if hasattr(f, "compute"):
            f = f.compute()
        return np.asarray(f)

    def valid_pixels(self) -> np.ndarray:
        """True where pixels are usable, shape (n_slow, n_fast)."""
        if self.pixel_mask is None:
            return np.ones(self.frame_shape, dtype=bool)
        return np.asarray(self.pixel_mask) == 0

    def info(self) -> dict:
        """JSON-friendly summary (what ``napari-xrd info --json`` prints)."""
        return {
            "path": self.path,
            "format": self.format,
            "shape": [int(n) for n in self.data.shape],
            "frames": self.n_frames,
            "dtype": str(self.dtype),
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "masked_pixels": None
            if self.pixel_mask is None
            else int(np.count_nonzero(np.asarray(self.pixel_mask))),
            "metadata": self.metadata,
        }
