"""Reading diffraction images: one entry point, :func:`open_image`.

Every reader returns a :class:`DiffractionImage`; the napari reader, the CLI
and the models all go through :func:`open_image`.
"""

from napari_xrd.core.io.types import DiffractionImage, ImageReadError

__all__ = ["DiffractionImage", "ImageReadError", "open_image"]


def open_image(path, **kwargs) -> DiffractionImage:
    """Open a diffraction image file (or a numbered series) lazily.

    See :func:`napari_xrd.core.io.registry.open_image`.
    """
    from napari_xrd.core.io.registry import open_image as _open

    return _open(path, **kwargs)
