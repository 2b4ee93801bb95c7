"""Detector models: sizes, pixel sizes and module layouts.

One catalogue used by the readers (to recognise a detector and mask its
gaps), the simulator (to draw gaps) and the benchmarks.

=================  ===========  ======  =============  ===========  =========
name               n_fast×slow  px mm   module f×s     gaps f/s px  modules
=================  ===========  ======  =============  ===========  =========
pilatus6m          2463×2527    0.172   487×195        7 / 17       5 × 12
eiger16m           4150×4371    0.075   1030×514       10 / 37      4 × 8
adsc_q4            2304×2304    0.0816  1152×1152      0 / 0        2 × 2
=================  ===========  ======  =============  ===========  =========

The ADSC Quantum-4 is a 2 × 2 mosaic of CCDs whose tapers leave narrow
zero-valued seams in the image rather than pixel gaps; readers find those
seams from the data (see :func:`napari_xrd.core.io`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import GAP

__all__ = ["DetectorModel", "DETECTORS", "get_detector", "identify_detector"]


@dataclass(frozen=True)
class DetectorModel:
    """A pixel-array detector made of identical modules.

    Attributes
    ----------
    name : str
    n_fast, n_slow : int
        Image size in pixels.
    pixel_size : float
        mm.
    module_fast, module_slow : int
        Module size in pixels.
    gap_fast, gap_slow : int
        Gap between modules along fast and slow, in pixels.
    """

    name: str
    n_fast: int
    n_slow: int
    pixel_size: float
    module_fast: int
    module_slow: int
    gap_fast: int
    gap_slow: int

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(n_slow, n_fast)``."""
        return (self.n_slow, self.n_fast)

    @property
    def n_modules(self) -> tuple[int, int]:
        """Modules along (fast, slow)."""
        return (
            (self.n_fast + self.gap_fast) // (self.module_fast + self.gap_fast),
            (self.n_slow + self.gap_slow) // (self.module_slow + self.gap_slow),
        )

    def module_origins(self) -> list[tuple[int, int]]:
        """``(fast0, slow0)`` array index of each module's first pixel."""
        nf, ns = self.n_modules
        return [
            (i * (self.module_fast + self.gap_fast), j * (self.module_slow + self.gap_slow))
            for j in range(ns)
            for i in range(nf)
        ]

    def gap_mask(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Pixel mask with ``GAP`` set between modules.

        Parameters
        ----------
        shape : (n_slow, n_fast), optional
            A smaller training size: the layout is scaled to it (gaps stay at
            least one pixel wide).  Default: the full detector.

        Returns
        -------
        pixel_mask : (n_slow, n_fast) uint32 ndarray
        """
        full = self.shape
        shape = full if shape is None else tuple(shape)
        mask = np.zeros(shape, dtype=np.uint32)
        if self.gap_fast == 0 and self.gap_slow == 0:
            return mask
        sf = shape[1] / full[1]
        ss = shape[0] / full[0]
        nf, ns = self.n_modules
        for i in range(1, nf):
            start = i * (self.module_fast + self.gap_fast) - self.gap_fast
            a = int(round(start * sf))
            b = max(a + 1, int(round((start + self.gap_fast) * sf)))
            mask[:, a:b] = GAP
        for j in range(1, ns):
            start = j * (self.module_slow + self.gap_slow) - self.gap_slow
            a = int(round(start * ss))
            b = max(a + 1, int(round((start + self.gap_slow) * ss)))
            mask[a:b, :] = GAP
        return mask

    def geometry(
        self,
        distance: float,
        wavelength: float,
        beam_center: tuple[float, float] | None = None,
        *,
        pitch: float = 0.0,
        yaw: float = 0.0,
        shape: tuple[int, int] | None = None,
    ) -> DetectorGeometry:
        """A :class:`DetectorGeometry` for this detector.

        ``shape`` gives a binned training size: the pixel size grows so that
        the detector keeps its physical size; ``beam_center`` is then in the
        binned pixels.  Default beam centre: the image centre.
        """
        shape = self.shape if shape is None else tuple(int(n) for n in shape)
        pixel = self.pixel_size * self.n_fast / shape[1]
        if beam_center is None:
            beam_center = (shape[1] / 2.0, shape[0] / 2.0)
        return DetectorGeometry(
            shape=shape,
            pixel_size=pixel,
            distance=distance,
            beam_center=beam_center,
            wavelength=wavelength,
            pitch=pitch,
            yaw=yaw,
            name=self.name,
        )


DETECTORS = {
    d.name: d
    for d in (
        DetectorModel("pilatus6m", 2463, 2527, 0.172, 487, 195, 7, 17),
        DetectorModel("eiger16m", 4150, 4371, 0.075, 1030, 514, 10, 37),
        DetectorModel("adsc_q4", 2304, 2304, 0.0816, 1152, 1152, 0, 0),
    )
}


def get_detector(name: str) -> DetectorModel:
    """Detector model by name (case-insensitive; "pilatus6m", "eiger16m", "adsc_q4")."""
    key = name.lower().replace(" ", "").replace("-", "").replace("_", "")
    for k, d in DETECTORS.items():
        if k.replace("_", "") == key:
            return d
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def identify_detector(shape: tuple[int, int], pixel_size: float | None = None) -> DetectorModel | None:
    """The catalogue detector with this image shape (and pixel size), or None."""
    for d in DETECTORS.values():
        if tuple(shape) == d.shape and (pixel_size is None or abs(pixel_size - d.pixel_size) < 1e-3):
            return d
    return None
