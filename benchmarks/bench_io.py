"""Reader benchmarks for napari-xrd (issue 2 targets); prints figures.

1. Time to first frame of an EIGER 16M-sized NeXus master file
   (4150 x 4371 uint32, several bitshuffle-LZ4 frames in external data
   files): ``open_image(master).frame(0)``; cold (a fresh interpreter,
   imports included) and warm (same process).  Target: < 1 s.
2. Scrolling through a 1000-frame lazy stack frame by frame, as napari does
   (``np.asarray(image.data[i])``), measuring resident memory (RSS) after
   every frame and the peak.  Target: < 1.5 GB.  Runs in its own process so
   the figure is not inflated by the other sections.
3. A Pilatus 6M CBF: ``open_image(path).frame(0)`` against
   ``fabio.open(path).data`` on the same file, alternating repeats, median
   ratio.  Target: <= 1.1.

Files are generated in a temporary directory and deleted afterwards.

Usage::

    nice python benchmarks/bench_io.py                      # all, 1000 x EIGER 16M
    nice python benchmarks/bench_io.py --scroll-detector eiger16m --scroll-frames 200
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _synthetic_frames(detector: str, n_distinct: int, seed: int = 0):
    """Sparse fine-sliced-like frames (mean 0.05 counts + spots), gaps = 2**32-1."""
    from napari_xrd.core.detectors import get_detector

    det = get_detector(detector)
    rng = np.random.default_rng(seed)
    gaps = det.gap_mask() > 0
    frames = []
    for _ in range(n_distinct):
        f = rng.poisson(0.05, det.shape).astype(np.uint32)
        ys = rng.integers(0, det.shape[0], 300)
        xs = rng.integers(0, det.shape[1], 300)
        f[ys, xs] += rng.integers(10, 5000, 300).astype(np.uint32)
        f[gaps] = np.iinfo(np.uint32).max
        frames.append(f)
    return det, frames, gaps


class _Cycle:
    """Frame source for write_nexus: ``n`` frames cycling through a few."""

    def __init__(self, frames, n):
        self.frames, self.shape, self.dtype = frames, (n,) + frames[0].shape, frames[0].dtype

    def __getitem__(self, i):
        return self.frames[i % len(self.frames)]


def _write(path, detector, n_frames, n_distinct, frames_per_file):
    from napari_xrd.core.io.nexus import write_nexus
    from napari_xrd.core.masks import GAP

    det, frames, gaps = _synthetic_frames(detector, n_distinct)
    geometry = det.geometry(distance=200.0, wavelength=0.9763)
    pixel_mask = np.where(gaps, GAP, 0).astype(np.uint32)
    t0 = time.perf_counter()
    files = write_nexus(path, _Cycle(frames, n_frames), geometry, pixel_mask,
                        frames_per_file=frames_per_file, oscillation=(0.0, 0.1))
    size = sum(os.path.getsize(f) for f in files)
    return files, time.perf_counter() - t0, size


def bench_first_frame(tmp, n_frames=5):
    master = os.path.join(tmp, "ttff_master.h5")
    files, t_write, size = _write(master, "eiger16m", n_frames, n_frames, frames_per_file=2)
    print(f"[first frame] EIGER 16M master, {n_frames} frames of 4150 x 4371 uint32 (bslz4) in "
          f"{len(files) - 1} data files, {size / 1e6:.0f} MB, written in {t_write:.1f} s")
    code = (
        "import time; t0 = time.perf_counter();"
        "from napari_xrd.core.io import open_image;"
        f"im = open_image({master!r}); f = im.frame(0);"
        "print(time.perf_counter() - t0)"
    )
    def fresh(pre=""):
        return float(subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True,
                                    check=True).stdout)

    cold = [fresh() for _ in range(3)]
    # inside napari, dask.array and numpy are imported already
    napari_like = [fresh("import numpy, dask.array;") for _ in range(3)]
    from napari_xrd.core.io import open_image

    open_image(master).frame(0)
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        open_image(master).frame(0)
        warm.append(time.perf_counter() - t0)
    image = open_image(master)
    t0 = time.perf_counter()
    image.frame(n_frames - 1)
    t_next = time.perf_counter() - t0
    print(f"[first frame] cold (fresh interpreter, imports included): median {statistics.median(cold):.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in cold)})")
    print(f"[first frame] fresh interpreter with dask.array already imported (as in napari): median "
          f"{statistics.median(napari_like):.3f} s (runs {', '.join(f'{t:.3f}' for t in napari_like)})")
    print(f"[first frame] warm (same process): median {statistics.median(warm):.3f} s; "
          f"a further frame of the open file: {t_next:.3f} s   (target < 1 s)")


def _rss_mb():
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb():
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the
    parent's memory inherited across fork+exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def bench_scroll(tmp, detector, n_frames):
    master = os.path.join(tmp, "scroll_master.h5")
    files, t_write, size = _write(master, detector, n_frames, 8, frames_per_file=100)
    print(f"[scroll] {detector}: {n_frames} frames in {len(files) - 1} data files, "
          f"{size / 1e9:.2f} GB on disk, written in {t_write:.0f} s", flush=True)
    # read in a fresh process, so that writing does not count in its memory
    subprocess.run([sys.executable, __file__, "--read-scroll", master], check=True)


def read_scroll(master):
    from napari_xrd.core.io import open_image

    import dask.array  # noqa: F401  (imported already in napari)
    import h5py  # noqa: F401

    rss_start = _rss_mb()
    image = open_image(master)
    t0 = time.perf_counter()
    rss = []
    total = 0
    for i in range(image.n_frames):
        frame = np.asarray(image.data[i])  # what a napari Image layer asks of a dask stack
        total += int(frame[::97, ::89].sum())
        rss.append(_rss_mb())
    elapsed = time.perf_counter() - t0
    peak = _peak_rss_mb()
    frame_mb = image.frame_shape[0] * image.frame_shape[1] * image.dtype.itemsize / 1e6
    print(f"[scroll] {image.n_frames} frames of {image.frame_shape[1]} x {image.frame_shape[0]} "
          f"({frame_mb:.0f} MB each, {image.n_frames * frame_mb / 1e3:.1f} GB in all) read one by one in "
          f"{elapsed:.1f} s ({1e3 * elapsed / image.n_frames:.0f} ms/frame)")
    print(f"[scroll] RSS after imports, before open {rss_start:.0f} MB; while scrolling median {statistics.median(rss):.0f} MB, "
          f"max {max(rss):.0f} MB; process peak (VmHWM) {peak:.0f} MB   (target < 1500 MB)", flush=True)


def bench_cbf(tmp, repeats=21):
    import fabio
    from fabio.cbfimage import CbfImage

    from napari_xrd.core.detectors import get_detector
    from napari_xrd.core.io import open_image

    det = get_detector("pilatus6m")
    rng = np.random.default_rng(1)
    data = rng.poisson(3.0, det.shape).astype(np.int32)
    data[det.gap_mask() > 0] = -1
    data[rng.integers(0, det.shape[0], 50), rng.integers(0, det.shape[1], 50)] = -2
    header = (
        "# Detector: PILATUS 6M, S/N 60-0100\n# Pixel_size 172e-6 m x 172e-6 m\n"
        "# Exposure_time 0.1 s\n# Count_cutoff 1048500 counts\n# Wavelength 0.97950 A\n"
        "# Detector_distance 0.29906 m\n# Beam_xy (1231.50, 1263.50) pixels\n"
        "# Start_angle 0.0 deg.\n# Angle_increment 0.1 deg."
    )
    path = os.path.join(tmp, "pilatus6m_00001.cbf")
    CbfImage(data=data, header={"_array_data.header_contents": header}).write(path)
    ours, theirs = [], []
    np.testing.assert_array_equal(open_image(path).frame(0), fabio.open(path).data)
    for _ in range(repeats):  # alternate, so load on the shared machine hits both alike
        t0 = time.perf_counter()
        fabio.open(path).data
        theirs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        open_image(path).frame(0)
        ours.append(time.perf_counter() - t0)
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"[cbf] Pilatus 6M CBF ({os.path.getsize(path) / 1e6:.1f} MB), {repeats} alternating repeats: "
          f"open_image+frame(0) median {1e3 * m_ours:.1f} ms (incl. pixel mask, geometry), "
          f"fabio.open().data median {1e3 * m_theirs:.1f} ms, ratio {m_ours / m_theirs:.2f}   (target <= 1.1)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["first-frame", "scroll", "cbf"], help="run one section")
    parser.add_argument("--scroll-detector", default="eiger16m", choices=["eiger16m", "pilatus6m", "adsc_q4"])
    parser.add_argument("--scroll-frames", type=int, default=1000)
    parser.add_argument("--read-scroll", metavar="MASTER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read_scroll:
        return read_scroll(args.read_scroll)
    with tempfile.TemporaryDirectory(prefix="napari_xrd_bench_io_") as tmp:
        if args.only in (None, "cbf"):
            bench_cbf(tmp)
        if args.only in (None, "first-frame"):
            bench_first_frame(tmp)
        if args.only in (None, "scroll"):
            bench_scroll(tmp, args.scroll_detector, args.scroll_frames)


if __name__ == "__main__":
    main()
