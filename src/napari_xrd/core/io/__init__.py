"""Reading diffraction images: one entry point, :func:`open_image`.

Every reader returns a :class:`DiffractionImage`; the napari reader, the CLI
and the models all go through :func:`open_image`.
"""

from napari_xrd.core.io.types import DiffractionImage, ImageReadError

__all__ = ["DiffractionImage", "ImageReadError", "open_image", "open_images", "can_read", "find_series"]


def open_image(path, **kwargs) -> DiffractionImage:
    """Open a diffraction image file (or a numbered series) lazily.

    See :func:`napari_xrd.core.io.registry.open_image`.
    """
    from napari_xrd.core.io.registry import open_image as _open

    return _open(path, **kwargs)


def can_read(path) -> bool:
    """True if :func:`open_image` takes ``path``; never raises.

    See :func:`napari_xrd.core.io.registry.can_read`.
    """
    from napari_xrd.core.io.registry import can_read as _can_read

    return _can_read(path)


def open_images(paths, **kwargs) -> DiffractionImage:
    """Open several single-frame files as one lazy stack.

    See :func:`napari_xrd.core.io.registry.open_images`.
    """
    from napari_xrd.core.io.registry import open_images as _open

    return _open(paths, **kwargs)


def find_series(path) -> list[str]:
    """The files of the numbered series ``path`` belongs to.

    See :func:`napari_xrd.core.io.registry.find_series`.
    """
    from napari_xrd.core.io.registry import find_series as _find

    return _find(path)
