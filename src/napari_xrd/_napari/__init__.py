"""napari-facing code: reader, sample data, layers and widgets.

Everything napari- or Qt-specific lives under this package; it calls the
pure core (:mod:`napari_xrd.core`) for all computation.
"""
