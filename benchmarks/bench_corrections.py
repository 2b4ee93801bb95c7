"""Saving a correction of a Pilatus 6M frame: time, and napari's responsiveness meanwhile.

Prints
* core: make_correction + CorrectionStore.save, median of repeats (and the
  two parts separately);
* napari: the Corrections widget's save of the same frame in a real viewer,
  from the click to the worker's result, and the longest stall of the Qt
  event loop meanwhile (a 5 ms heartbeat timer; a stall is the longest gap
  between two ticks, minus the 5 ms period).

    python benchmarks/bench_corrections.py [--repeats 5]

Runs under a virtual display when there is no screen (Xvfb).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def pilatus_frame(seed=0):
    from napari_xrd.core.detectors import get_detector

    det = get_detector("pilatus6m")
    rng = np.random.default_rng(seed)
    img = rng.poisson(3.0, det.shape).astype(np.int32)
    gaps = det.gap_mask()
    img[gaps != 0] = -1
    spots = np.zeros(det.shape, bool)
    ys, xs = rng.integers(0, det.shape[0], 2000), rng.integers(0, det.shape[1], 2000)
    for dy in range(3):
        for dx in range(3):
            spots[np.clip(ys + dy, 0, det.shape[0] - 1), np.clip(xs + dx, 0, det.shape[1] - 1)] = True
    img[spots] += 200
    return det, img, gaps, spots


def bench_core(repeats: int) -> None:
    from napari_xrd.core.corrections import CorrectionStore, make_correction

    det, img, gaps, spots = pilatus_frame()
    geom = det.geometry(200.0, 1.0)
    pred = spots.copy()
    pred[:50] = False
    t_make, t_save = [], []
    with tempfile.TemporaryDirectory() as d:
        store = CorrectionStore(Path(d) / "store")
        for i in range(repeats):
            t0 = time.perf_counter()
            ex = make_correction(img, source_file=f"/data/frame_{i:05d}.cbf", frame=0, pixel_mask=gaps, spot_mask=spots,
                                 predicted_spot_mask=pred, geometry=geom, predicted_geometry=geom, anomaly_labels=[0] * 7)
            t1 = time.perf_counter()
            store.save(ex)
            t2 = time.perf_counter()
            t_make.append(t1 - t0)
            t_save.append(t2 - t1)
        size = sum(p.stat().st_size for p in (Path(d) / "store" / "shards").glob("*.h5")) / repeats
    tot = [a + b for a, b in zip(t_make, t_save)]
    print(f"core, Pilatus 6M frame ({det.shape[1]}x{det.shape[0]} int32), {repeats} saves into one store:")
    print(f"  make_correction (hash, diff)   median {1e3 * statistics.median(t_make):7.1f} ms")
    print(f"  CorrectionStore.save           median {1e3 * statistics.median(t_save):7.1f} ms")
    print(f"  total                          median {1e3 * statistics.median(tot):7.1f} ms  (max {1e3 * max(tot):.1f} ms)")
    print(f"  shard size                     {size / 1e6:.2f} MB per correction")


def bench_widget(repeats: int) -> None:
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_xrd._napari.layers import layer_data_from_image
    from napari_xrd._napari.widgets.corrections import CorrectionsWidget
    from napari_xrd.core.io.types import DiffractionImage

    det, img, gaps, spots = pilatus_frame()
    viewer = napari.Viewer(show=True)
    image = DiffractionImage(img[None], det.geometry(200.0, 1.0), gaps, "/data/pilatus_00001.cbf", "cbf")
    for data, kw, kind in layer_data_from_image(image):
        getattr(viewer, f"add_{kind}")(data, **kw)
    viewer.add_labels(spots.astype(np.uint8), name="spot mask")
    with tempfile.TemporaryDirectory() as d:
        w = CorrectionsWidget(viewer)
        viewer.window.add_dock_widget(w)
        w._store.value = str(Path(d) / "store")
        w._mask_layer.value = viewer.layers["spot mask"]
        w.start_correcting()
        app = QApplication.instance()
        for _ in range(20):
            app.processEvents()
        clock = QElapsedTimer()
        gaps_ms: list[float] = []
        last = [0.0]

        def tick():
            now = clock.nsecsElapsed() / 1e6
            gaps_ms.append(now - last[0])
            last[0] = now

        heartbeat = QTimer()
        heartbeat.setInterval(5)
        heartbeat.timeout.connect(tick)
        durations, stalls = [], []
        for i in range(repeats):
            viewer.layers["spot mask"].data[10 + i, 10] = 1  # a new edit each time
            gaps_ms.clear()
            clock.start()
            last[0] = 0.0
            heartbeat.start()
            before = w.last_saved_id
            t0 = time.perf_counter()
            w.save()
            while w.last_saved_id == before or w._worker is not None:
                app.processEvents()
                time.sleep(0.001)
            durations.append(time.perf_counter() - t0)
            heartbeat.stop()
            stalls.append(max(gaps_ms) - 5.0 if gaps_ms else float("nan"))
        viewer.close()
    print(f"napari Corrections widget, same frame, {repeats} saves (click -> saved):")
    print(f"  save time                      median {1e3 * statistics.median(durations):7.1f} ms  (max {1e3 * max(durations):.1f} ms)")
    print(f"  longest event-loop stall       median {statistics.median(stalls):7.1f} ms  (max {max(stalls):.1f} ms; target < 200 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-gui", action="store_true")
    args = ap.parse_args()
    bench_core(args.repeats)
    if not args.no_gui:
        from napari_xrd.cli.view import virtual_display_if_needed

        with virtual_display_if_needed(True):
            bench_widget(args.repeats)


if __name__ == "__main__":
    main()
