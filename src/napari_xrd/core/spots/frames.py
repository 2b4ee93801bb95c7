"""Spot finding over many frames: a sweep, a screening run, a series of files.

:func:`find_spots_in_frames` runs :func:`~napari_xrd.core.spots.find_spots`
on each chosen frame of an image (a :class:`~napari_xrd.core.io.types.DiffractionImage`
or an array stack) and yields the results in frame order as they come, so
that a long run can be printed, saved or shown as it goes and a failure at
frame 900 loses nothing before it.  With ``nproc > 1`` the frames are shared
among worker processes (one CPU thread each unless ``threads`` says
otherwise), which on the CPU is faster than one process using every core:
the U-Net's forward pass and the dispersion filters do not scale to many
threads.  The parent process reads each frame and sends it to a worker, so
any reader (lazy HDF5, a CBF series, dask) works unchanged.

:func:`parse_frames` reads frame selections such as ``"0-99,120"``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from napari_xrd.core.progress import Cancelled, check_cancel, report

__all__ = ["find_spots_in_frames", "parse_frames"]


def parse_frames(spec: str, n_frames: int) -> list[int]:
    """Frame indices from a selection such as ``"0-99,120,-1"``.

    Parameters
    ----------
    spec : str
        Comma-separated 0-based indices and inclusive ranges ``first-last``;
        a negative single index counts from the end (``-1`` is the last
        frame).  ``"all"`` selects every frame.
    n_frames : int
        Frames in the image.

    Returns
    -------
    list of int
        The indices in the order given, repeats removed.

    Raises
    ------
    ValueError
        Naming the part of ``spec`` that is not a frame selection or lies
        outside ``0 .. n_frames - 1``.
    """
    if spec.strip() == "all":
        return list(range(n_frames))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:  # a range (a leading "-" is a negative index)
                first, last = (int(v) for v in part.split("-", 1))
                if last < first:
                    raise ValueError(f"frames {spec!r}: range {part!r} runs backwards")
                picked = range(first, last + 1)
            else:
                k = int(part)
                picked = [k + n_frames if k < 0 else k]
        except ValueError as exc:
            if "backwards" in str(exc):
                raise
            raise ValueError(f"frames {spec!r}: {part!r} is not a frame index or a range first-last") from None
        for k in picked:
            if not 0 <= k < n_frames:
                raise ValueError(f"frames {spec!r}: frame {part} out of range (0..{n_frames - 1})")
            if k not in out:
                out.append(k)
    return out


# worker-process state, set once per process by _init_worker
_WORKER: dict = {}


def _init_worker(geometry, pixel_mask, options, with_labels):
    _WORKER.update(geometry=geometry, pixel_mask=pixel_mask, options=options, with_labels=with_labels)


def _find_one(index, image):
    from napari_xrd.core.spots import find_spots

    w = _WORKER
    res = find_spots(image, geometry=w["geometry"], pixel_mask=w["pixel_mask"], **w["options"])
    return index, (res.labels if w["with_labels"] else None), res.table


def _frame_of(source, index: int) -> np.ndarray:
    frame = getattr(source, "frame", None)
    if frame is not None:  # a DiffractionImage: its own reader, with the file's name in its errors
        return np.asarray(frame(index))
    return np.asarray(source if np.ndim(source) == 2 else source[index])


def find_spots_in_frames(
    source,
    frames=None,
    *,
    nproc: int = 1,
    geometry=None,
    pixel_mask=None,
    with_labels: bool = True,
    progress=None,
    cancel=None,
    **options,
):
    """Find spots frame by frame; yield each frame's result in frame order.

    Parameters
    ----------
    source : DiffractionImage or array_like
        A :class:`~napari_xrd.core.io.types.DiffractionImage` (its
        ``geometry`` and ``pixel_mask`` are used unless given), or an
        ``(n_frames, n_slow, n_fast)`` or ``(n_slow, n_fast)`` array (NumPy,
        dask, a napari layer's data).
    frames : sequence of int, optional
        Frame indices, in the order wanted (default: every frame).
    nproc : int
        Worker processes.  1 runs in this process.  Above 1, each worker
        runs one frame at a time with ``threads`` CPU threads (default 1),
        and at most ``2 · nproc`` frames are read ahead.  Meant for the CPU;
        with a GPU, one process already keeps it busy.  Workers are started
        with "spawn", so a script that calls this must, as for any Python
        multiprocessing, keep its top level under ``if __name__ ==
        "__main__":``.
    geometry : DetectorGeometry, optional
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    with_labels : bool
        Also return each frame's label image (False saves memory and, with
        workers, the transfer of a full frame of labels per frame: a
        screening run needs only the tables).
    progress, cancel : callables, optional
        See :mod:`napari_xrd.core.progress`; progress counts finished frames.
    **options
        Passed to :func:`~napari_xrd.core.spots.find_spots` (``method``,
        ``model``, ``ice_rings``, ...).

    Yields
    ------
    frame : int
    labels : (n_slow, n_fast) int32 ndarray or None
        None when ``with_labels`` is False.
    table : SpotTable

    Raises
    ------
    Cancelled
        When ``cancel()`` returns True; frames already yielded stand, and
        workers still running finish their frame and are stopped.
    ValueError, ImageReadError
        From a frame that cannot be read or searched (the reader's error
        names the file); frames yielded before it stand.
    """
    if int(nproc) < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    n_frames = getattr(source, "n_frames", None)
    if n_frames is None:
        n_frames = 1 if np.ndim(source) == 2 else int(np.shape(source)[0])
    frames = list(range(n_frames)) if frames is None else [int(f) for f in frames]
    for f in frames:
        if not -n_frames <= f < n_frames:
            raise IndexError(f"frame {f} out of range (0..{n_frames - 1})")
    if geometry is None:
        geometry = getattr(source, "geometry", None)
    if pixel_mask is None:
        pixel_mask = getattr(source, "pixel_mask", None)
    total = len(frames)
    report(progress, 0, total, "frames")
    if int(nproc) == 1 or total <= 1:
        from napari_xrd.core.spots import find_spots

        for k, f in enumerate(frames):
            check_cancel(cancel)
            res = find_spots(_frame_of(source, f), geometry=geometry, pixel_mask=pixel_mask, cancel=cancel,
                             **options)
            report(progress, k + 1, total, f"frame {f}: {res.table.n_spots} spots")
            yield f, (res.labels if with_labels else None), res.table
        return
    yield from _in_workers(source, frames, int(nproc), geometry, pixel_mask, with_labels, progress, cancel, options)


def _in_workers(source, frames, nproc, geometry, pixel_mask, with_labels, progress, cancel, options):
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    options = dict(options)
    options.setdefault("threads", 1)
    options.setdefault("device", "cpu")
    # spawn: a fork of a process that has started torch's or BLAS's threads can deadlock
    pool = ProcessPoolExecutor(max_workers=nproc, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(geometry, None if pixel_mask is None else np.asarray(pixel_mask), options,
                                         with_labels))
    pending: deque = deque()
    todo = iter(frames)
    done = 0
    try:
        while True:
            while len(pending) < 2 * nproc:  # read ahead, bounded: each queued frame holds its pixels
                f = next(todo, None)
                if f is None:
                    break
                check_cancel(cancel)
                try:
                    pending.append(pool.submit(_find_one, f, _frame_of(source, f)))
                except Exception as exc:  # a frame that cannot be read: raised in its turn, after the frames before it
                    failed = Future()
                    failed.set_exception(exc)
                    pending.append(failed)
                    todo = iter(())
            if not pending:
                break
            fut = pending.popleft()
            while True:  # wait in steps, so that a cancel is seen while a frame runs
                check_cancel(cancel)
                try:
                    f, labels, table = fut.result(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            done += 1
            report(progress, done, len(frames), f"frame {f}: {table.n_spots} spots")
            yield f, labels, table
    except (Cancelled, GeneratorExit, KeyboardInterrupt, Exception):
        for fut in pending:
            fut.cancel()
        workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:  # their frames are not wanted
            if proc.is_alive():
                proc.terminate()
        raise
    pool.shutdown(wait=True)

