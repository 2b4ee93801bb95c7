"""napari-xrd: inspect protein X-ray diffraction images in napari.

The package is split into a pure core (:mod:`napari_xrd.core`, no Qt or
napari imports) and thin napari widgets/readers on top of it.  Importing
this package is cheap: heavy modules (torch, h5py, fabio) are imported where
they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
