"""``napari-xrd view FILE...`` and ``napari-xrd demo``: napari with the plugin's widgets docked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager


def dock_widget_names() -> list[str]:
    """Display names of the plugin's widgets, in manifest order."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("napari-xrd")
    return [w.display_name for w in manifest.contributions.widgets or []]


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="open files in napari with the napari-xrd widgets")
    p.add_argument("files", nargs="+", help="image files (CBF, SMV .img[.bz2], EIGER master .h5, TIFF, .npy)")
    p.add_argument("--stack", action="store_true", help="open the files as one stack (a numbered series)")
    p.add_argument("--screenshot", metavar="PNG", help="render the window to PNG and exit (starts Xvfb if there is no display)")
    p.set_defaults(func=_run_view)
    d = sub.add_parser("demo", help="open napari with a sample frame, its rings and mask, and the widgets")
    d.add_argument(
        "--sample",
        choices=["adsc", "simulated"],
        default="adsc",
        help="adsc: real ADSC Q4 lysozyme frame (default); simulated: Pilatus 6M still with truth",
    )
    d.add_argument("--screenshot", metavar="PNG", help="render the window to PNG and exit (starts Xvfb if there is no display)")
    d.set_defaults(func=_run_demo)


@contextmanager
def virtual_display_if_needed(needed: bool):
    """Start an Xvfb server for the duration when there is no display."""
    if not needed or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux":
        yield
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise OSError("no display and no Xvfb: install xvfb (apt-get install xvfb) or run under xvfb-run -a")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(w), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        raise OSError("Xvfb failed to start")
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield
    finally:
        os.environ.pop("DISPLAY", None)
        proc.terminate()
        proc.wait(timeout=10)


def open_viewer(*, files=(), stack=False, sample=None, screenshot=None, show=True):
    """Create the viewer, load data, dock widgets; return the viewer.

    Used by the CLI and by the tests (which pass ``show=False``).
    """
    import napari

    viewer = napari.Viewer(title="napari-xrd", show=show)
    if sample:
        viewer.open_sample("napari-xrd", sample)
    if files:
        viewer.open(list(files) if stack else files, plugin="napari-xrd", stack=stack)
    docks = []
    for name in dock_widget_names():
        dock, _ = viewer.window.add_plugin_dock_widget("napari-xrd", name, tabify=bool(docks))
        docks.append(dock)
    _raise_first_dock(viewer)
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    if images:
        viewer.layers.selection.active = images[0]
    viewer.reset_view()
    return viewer


def _raise_first_dock(viewer) -> None:
    """Show the Geometry panel's tab (docks are tabbed together)."""
    for name, widget in viewer.window.dock_widgets.items():
        if name.startswith("Geometry"):
            native = getattr(widget, "native", widget)
            dock = native.parent()
            if dock is not None:
                dock.raise_()


def _screenshot_and_close(viewer, path) -> None:
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.resize(1500, 950)
    for _ in range(20):
        QApplication.processEvents()
    _raise_first_dock(viewer)
    viewer.reset_view()
    _show_readout_example(viewer)
    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(path, canvas_only=False, flash=False)
    print(f"screenshot written to {path}")
    viewer.close()


def _show_readout_example(viewer) -> None:
    """Put the cursor readout on screen (a screenshot has no mouse): a pixel
    two thirds of the way from the beam centre to the image edge."""
    from napari_xrd._napari.layers import get_geometry
    from napari_xrd._napari.readout import _update_overlay, readout_layer
    from napari_xrd.core.coords import dials_to_napari

    layer = readout_layer(viewer)
    g = get_geometry(layer) if layer is not None else None
    if g is None:
        return
    bf, bs = g.beam_center
    rc = dials_to_napari([bf + (g.shape[1] - bf) * 0.66, bs * 0.6])
    viewer.cursor.position = tuple(layer.data_to_world(list(viewer.dims.point[:-2]) + list(rc)))
    _update_overlay(viewer)


def _run(files=(), stack=False, sample=None, screenshot=None) -> int:
    with virtual_display_if_needed(screenshot is not None):
        import napari

        viewer = open_viewer(files=files, stack=stack, sample=sample, show=True)
        if screenshot:
            _screenshot_and_close(viewer, screenshot)
            return 0
        napari.run()
    return 0


def _run_view(args) -> int:
    return _run(files=args.files, stack=args.stack, screenshot=args.screenshot)


def _run_demo(args) -> int:
    sample = {"adsc": "adsc_lysozyme", "simulated": "simulated_pilatus"}[args.sample]
    return _run(sample=sample, screenshot=args.screenshot)
