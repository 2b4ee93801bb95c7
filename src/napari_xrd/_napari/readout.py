"""Readout of the pixel under the cursor: position, raw value, d, 2θ.

:func:`install_cursor_readout` puts it in the canvas corner of a viewer (the
reader installs it on the viewer a diffraction image is opened in, so it is
there without any widget); the geometry panel shows the same in its own
label.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from napari_xrd._napari.layers import find_xrd_image_layers, get_geometry
from napari_xrd.core.coords import napari_to_dials

__all__ = ["cursor_readout", "format_readout", "install_cursor_readout", "readout_layer", "text_overlay"]

_INSTALLED: "weakref.WeakSet" = weakref.WeakSet()


def cursor_readout(layer, world_position) -> dict | None:
    """What napari-xrd shows for the pixel under the cursor.

    Parameters
    ----------
    layer : napari Image layer
    world_position : sequence of float
        Cursor position in world coordinates (``viewer.cursor.position``).

    Returns
    -------
    dict or None
        ``fast``, ``slow`` (corner convention, px), ``value`` (raw), and,
        with a geometry, ``d_spacing`` (Å), ``two_theta_deg``,
        ``azimuth_deg``; None outside the image.
    """
    pos = np.asarray(layer.world_to_data(world_position), dtype=float)
    rc = pos[-2:]
    n_slow, n_fast = layer.data.shape[-2:]
    idx = np.floor(rc + 0.5).astype(int)
    if not (0 <= idx[0] < n_slow and 0 <= idx[1] < n_fast):
        return None
    fast, slow = napari_to_dials(rc)
    lead = tuple(int(np.clip(np.floor(p + 0.5), 0, s - 1)) for p, s in zip(pos[:-2], layer.data.shape[:-2]))
    value = layer.data[lead + (idx[0], idx[1])]
    if hasattr(value, "compute"):
        value = value.compute()
    out = {"fast": float(fast), "slow": float(slow), "value": value.item() if hasattr(value, "item") else value}
    geometry = get_geometry(layer)
    if geometry is not None:
        out["d_spacing"] = float(geometry.resolution_at(fast, slow))
        out["two_theta_deg"] = math.degrees(geometry.two_theta_at(fast, slow))
        out["azimuth_deg"] = math.degrees(geometry.azimuth_at(fast, slow))
    pm = layer.metadata.get("pixel_mask")
    if pm is not None and pm[idx[0], idx[1]]:
        out["masked"] = int(pm[idx[0], idx[1]])
    return out


def format_readout(r: dict | None) -> str:
    if r is None:
        return ""
    v = r["value"]
    vs = f"{v:.6g}" if isinstance(v, float) else str(v)
    text = f"x {r['fast']:.1f}  y {r['slow']:.1f}  I {vs}"
    if "d_spacing" in r:
        d = r["d_spacing"]
        text += f"  d {'∞' if not math.isfinite(d) else f'{d:.2f}'} Å  2θ {r['two_theta_deg']:.2f}°"
    if "masked" in r:
        text += "  (masked)"
    return text


def readout_layer(viewer):
    """The diffraction image the readout describes: the active layer if it is
    one, else the top-most visible one."""
    active = viewer.layers.selection.active
    images = find_xrd_image_layers(viewer)
    if active in images:
        return active
    visible = [ly for ly in images if ly.visible]
    return visible[-1] if visible else None


def text_overlay(viewer):
    """The canvas text overlay (``viewer.canvas.overlays.text`` in napari >= 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and hasattr(overlays, "text"):
        return overlays.text
    return viewer.text_overlay


def _update_overlay(viewer, event=None):
    layer = readout_layer(viewer)
    text = format_readout(cursor_readout(layer, viewer.cursor.position)) if layer is not None else ""
    overlay = text_overlay(viewer)
    overlay.text = text
    overlay.visible = bool(text)


def install_cursor_readout(viewer) -> None:
    """Show the readout in the canvas corner of ``viewer`` (idempotent)."""
    if viewer in _INSTALLED:
        return
    viewer.mouse_move_callbacks.append(_update_overlay)
    overlay = text_overlay(viewer)
    overlay.position = "bottom_left"
    overlay.font_size = 11
    _INSTALLED.add(viewer)
