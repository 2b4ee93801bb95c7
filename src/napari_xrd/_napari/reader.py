"""npe2 reader: diffraction images opened through :func:`napari_xrd.core.io.open_image`."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def get_reader(path):
    """Return a reader function if napari-xrd can read ``path``, else None.

    Never raises: napari asks every plugin about every file.
    """
    try:
        from napari_xrd.core.io.registry import can_read

        paths = path if isinstance(path, list) else [path]
        if not paths or not all(can_read(p) for p in paths):
            return None
    except Exception:  # noqa: BLE001 - a "can I read this" check must not raise
        log.debug("napari-xrd: can_read failed for %r", path, exc_info=True)
        return None
    return read_diffraction


def read_diffraction(path):
    """Read one file, a numbered series, or a list of files into layer-data tuples.

    A list of files is read as one stack when they form a series.  Errors
    are :class:`~napari_xrd.core.io.ImageReadError` naming the file and the
    problem; napari shows them as a notification and keeps running.
    """
    from napari_xrd._napari.layers import layer_data_from_image
    from napari_xrd.core.io import open_image

    paths = path if isinstance(path, list) else [path]
    image = open_image(paths if len(paths) > 1 else paths[0])
    _install_readout_on_current_viewer()
    return layer_data_from_image(image)


def _install_readout_on_current_viewer() -> None:
    """Give the viewer the image opens in a cursor readout (d, 2θ, value)."""
    try:
        import napari

        from napari_xrd._napari.readout import install_cursor_readout

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - reading must work without a viewer
        return
    if viewer is not None:
        install_cursor_readout(viewer)
