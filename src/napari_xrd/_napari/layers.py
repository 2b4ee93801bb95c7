"""napari layers for a diffraction image, and the geometry attached to them.

An image layer opened by napari-xrd carries in its ``metadata``:

``"geometry"``
    a :class:`~napari_xrd.core.geometry.DetectorGeometry` (or None),
``"pixel_mask"``
    the uint32 pixel mask (or None),
``"xrd_id"``
    an id that its overlay layers (mask, beam centre, rings, ring labels)
    point back to with ``metadata["xrd_overlay_of"]``,
``"path"``, ``"format"``, ``"header"``
    where it came from.

Widgets read the geometry with :func:`get_geometry` and change it with
:func:`set_geometry`, which also redraws the overlays: that is how a beam
centre found by one widget reaches the rings, the cursor readout and the
other widgets.  Everything here runs on the GUI thread and is cheap.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from napari_xrd.core import masks
from napari_xrd.core.coords import dials_to_napari
from napari_xrd.core.display import (
    HEXAGONAL_ICE_D_SPACINGS,
    auto_contrast,
    log_ramp,
    resolution_ring_d_spacings,
)
from napari_xrd.core.geometry import DetectorGeometry

__all__ = [
    "layer_data_from_image",
    "get_geometry",
    "set_geometry",
    "overlay_layers",
    "find_xrd_image_layers",
    "mask_labels",
    "stack_zeros",
    "colormap",
    "MASK_LABEL_NAMES",
]

# label value shown in the mask layer for each pixel-mask bit (first set bit wins)
_MASK_LABELS = [(masks.GAP, 1), (masks.DEAD, 2), (masks.COLD, 3), (masks.HOT, 4), (masks.NOISY, 5), (masks.USER, 6)]
MASK_LABEL_NAMES = {1: "gap", 2: "dead", 3: "cold", 4: "hot", 5: "noisy", 6: "user"}
_OTHER_BITS_LABEL = 7

RING_COLOR = "#ffd23f"
ICE_COLOR = "#4fc3f7"
BEAM_COLOR = "#ff3b30"


def mask_labels(pixel_mask: np.ndarray) -> np.ndarray:
    """Label image (uint8) of a pixel mask: 1 gap, 2 dead, 3 cold, 4 hot, 5 noisy, 6 user, 7 other bits."""
    pm = np.asarray(pixel_mask).astype(np.uint32, copy=False)
    out = np.zeros(pm.shape, dtype=np.uint8)
    out[pm != 0] = _OTHER_BITS_LABEL
    for bit, label in reversed(_MASK_LABELS):
        out[(pm & bit) != 0] = label
    return out


def stack_zeros(shape, dtype=np.int32) -> np.ndarray:
    """A zero-filled array for a layer as large as an image stack, memory spent only where written.

    A Labels layer matching a sweep of a few thousand frames would need tens
    of GB as a plain array.  For 3-D shapes this is a memory map of a sparse
    temporary file (``TMPDIR``), unlinked at once where the system allows, so
    nothing is left behind: untouched frames cost neither memory nor disk,
    and napari paints into it like any array.  2-D shapes get ``np.zeros``.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray (``np.memmap`` for 3-D shapes)
    """
    import os
    import tempfile

    shape = tuple(int(n) for n in shape)
    if len(shape) < 3:
        return np.zeros(shape, dtype=dtype)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with tempfile.NamedTemporaryFile(prefix="napari-xrd-", suffix=".labels", delete=False) as fh:
        fh.truncate(nbytes)  # a hole: reads as zeros, takes no disk until written
    data = np.memmap(fh.name, dtype=dtype, mode="r+", shape=shape)
    try:
        os.unlink(fh.name)  # POSIX: the mapping keeps the file's pages; nothing is left behind
    except OSError:  # Windows: the file is open; remove it when Python exits
        import atexit

        atexit.register(lambda: os.path.exists(fh.name) and os.unlink(fh.name))
    return data


def colormap(kind: str = "gray", *, inverted: bool = False):
    """napari colormap for diffraction data: "gray" (linear) or "log".

    The log map keeps data and cursor values raw; only the ramp from the
    lower to the upper contrast limit is logarithmic.  ``inverted`` gives
    dark spots on a light background, as adxv and the DIALS image viewer do.
    """
    from napari.utils.colormaps import Colormap

    if kind not in ("gray", "log"):
        raise ValueError(f"colormap kind must be 'gray' or 'log', got {kind!r}")
    g = log_ramp(256) if kind == "log" else np.linspace(0.0, 1.0, 256)
    if inverted:
        g = 1.0 - g
    colors = np.stack([g, g, g, np.ones_like(g)], axis=1)
    name = f"xrd {kind}{' inverted' if inverted else ''}"
    return Colormap(colors, name=name, display_name=name)


# ---------------------------------------------------------------- overlays
def _ring_shapes(geometry: DetectorGeometry, d_spacings) -> tuple[list[np.ndarray], list[float], np.ndarray]:
    """Ring polygons in napari (row, col), their d values and label positions."""
    polys, ds, label_pos = [], [], []
    n_slow, n_fast = geometry.shape
    for d in d_spacings:
        pts = geometry.ring_points(d, n=360)
        if len(pts) < 3:
            continue
        rc = dials_to_napari(pts)
        polys.append(rc)
        ds.append(float(d))
        # label where the ring is inside the image, preferring the upper right
        inside = (pts[:, 0] > 0) & (pts[:, 0] < n_fast) & (pts[:, 1] > 0) & (pts[:, 1] < n_slow)
        order = np.argsort(np.abs(np.arange(len(pts)) - 315 * len(pts) / 360))
        idx = next((i for i in order if inside[i]), order[0])
        label_pos.append(rc[idx])
    return polys, ds, np.asarray(label_pos).reshape(-1, 2)


def _overlay_tuples(geometry: DetectorGeometry, xrd_id: str, stem: str, *, ice: bool = False) -> list[tuple]:
    d_res = resolution_ring_d_spacings(geometry)
    polys, ds, pos = _ring_shapes(geometry, d_res)
    scale_px = max(geometry.shape) / 250.0
    out = []
    ring_kw = {
        "name": f"{stem} rings",
        "shape_type": "polygon",
        "edge_color": RING_COLOR,
        "face_color": "transparent",
        "edge_width": max(1.0, scale_px * 0.6),
        "opacity": 0.8,
        "features": {"d_spacing": np.asarray(ds)},
        "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "rings"},
    }
    out.append((polys, ring_kw, "shapes"))
    label_kw = {
        "name": f"{stem} ring labels",
        "size": 0.1,
        "face_color": "transparent",
        "border_width": 0,
        "features": {"d_spacing": np.asarray(ds)},
        "text": {"string": "{d_spacing:.2f} Å", "color": RING_COLOR, "size": 11, "anchor": "upper_left"},
        "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "ring_labels"},
    }
    out.append((pos, label_kw, "points"))
    if ice:
        ipolys, ids, _ = _ring_shapes(geometry, HEXAGONAL_ICE_D_SPACINGS)
        out.append(
            (
                ipolys,
                {
                    "name": f"{stem} ice rings",
                    "shape_type": "polygon",
                    "edge_color": ICE_COLOR,
                    "face_color": "transparent",
                    "edge_width": max(1.0, scale_px * 0.4),
                    "opacity": 0.6,
                    "features": {"d_spacing": np.asarray(ids)},
                    "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "ice_rings"},
                },
                "shapes",
            )
        )
    bc = dials_to_napari(np.asarray([geometry.beam_center]))
    out.append(
        (
            bc,
            {
                "name": f"{stem} beam centre",
                "symbol": "cross",
                "size": max(8.0, scale_px * 6),
                "face_color": BEAM_COLOR,
                "border_color": BEAM_COLOR,
                "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "beam_center"},
            },
            "points",
        )
    )
    return out


def layer_data_from_image(image, *, name: str | None = None, ice_rings: bool = False) -> list[tuple]:
    """napari layer-data tuples for a :class:`~napari_xrd.core.io.DiffractionImage`.

    Returns the image (2-D for one frame, the lazy 3-D stack otherwise), the
    pixel mask as a Labels layer (if any pixel is masked), and, when the
    geometry is known, resolution rings with labels and the beam centre.
    """
    stem = name or Path(image.path).name
    for suffix in (".bz2", ".gz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    xrd_id = uuid.uuid4().hex
    data = image.data if image.n_frames > 1 else image.data[0]
    first = image.frame(0)
    valid = image.valid_pixels()
    lo, hi = auto_contrast(first, valid)
    metadata = {
        "xrd_id": xrd_id,
        "geometry": image.geometry,
        "pixel_mask": image.pixel_mask,
        "path": image.path,
        "format": image.format,
        "header": image.metadata,
    }
    img_kw = {
        "name": stem,
        "contrast_limits": (lo, hi),
        "colormap": colormap("gray", inverted=False),
        "metadata": metadata,
    }
    out = [(data, img_kw, "image")]
    if image.pixel_mask is not None and np.any(image.pixel_mask):
        out.append(
            (
                mask_labels(image.pixel_mask),
                {
                    "name": f"{stem} mask",
                    "opacity": 0.45,
                    "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "mask", "label_names": MASK_LABEL_NAMES},
                },
                "labels",
            )
        )
    if image.geometry is not None:
        out.extend(_overlay_tuples(image.geometry, xrd_id, stem, ice=ice_rings))
    return out


# ---------------------------------------------------------------- registry
def find_xrd_image_layers(viewer) -> list:
    """Image layers in ``viewer`` that napari-xrd opened (they carry an ``xrd_id``)."""
    from napari.layers import Image

    return [ly for ly in viewer.layers if isinstance(ly, Image) and "xrd_id" in ly.metadata]


def get_geometry(layer) -> DetectorGeometry | None:
    """The detector geometry attached to an image layer, or None."""
    g = layer.metadata.get("geometry") if layer is not None else None
    if isinstance(g, dict):
        g = DetectorGeometry.from_dict(g)
    return g


def overlay_layers(viewer, image_layer) -> dict:
    """Overlay layers of an image layer, by kind ("rings", "beam_center", ...)."""
    xrd_id = image_layer.metadata.get("xrd_id")
    return {
        ly.metadata["xrd_overlay"]: ly
        for ly in viewer.layers
        if xrd_id is not None and ly.metadata.get("xrd_overlay_of") == xrd_id
    }


def set_geometry(viewer, image_layer, geometry: DetectorGeometry, *, ice_rings: bool | None = None) -> None:
    """Attach ``geometry`` to ``image_layer`` and redraw its rings and beam centre.

    Overlay layers that were deleted are created again.  Call on the GUI
    thread (from a worker's ``returned`` signal, not from the worker).
    """
    if tuple(geometry.shape) != tuple(image_layer.data.shape[-2:]):
        raise ValueError(
            f"geometry shape {geometry.shape} does not match image layer "
            f"{image_layer.name!r} shape {tuple(image_layer.data.shape[-2:])}"
        )
    if "xrd_id" not in image_layer.metadata:
        image_layer.metadata["xrd_id"] = uuid.uuid4().hex
    image_layer.metadata["geometry"] = geometry
    existing = overlay_layers(viewer, image_layer)
    if ice_rings is None:
        ice_rings = "ice_rings" in existing
    elif not ice_rings and "ice_rings" in existing:
        viewer.layers.remove(existing.pop("ice_rings"))
    for data, kwargs, kind in _overlay_tuples(geometry, image_layer.metadata["xrd_id"], image_layer.name, ice=ice_rings):
        which = kwargs["metadata"]["xrd_overlay"]
        layer = existing.get(which)
        if layer is None:
            getattr(viewer, f"add_{kind}")(data, **kwargs)
            continue
        if kind == "shapes":
            layer.data = []
            if data:
                layer.add(data, shape_type="polygon", edge_color=kwargs["edge_color"], edge_width=kwargs["edge_width"], face_color="transparent")
            layer.features = kwargs["features"]
        else:
            layer.data = data
            if "features" in kwargs:
                layer.features = kwargs["features"]
                layer.text.string = kwargs["text"]["string"]
        layer.refresh()

