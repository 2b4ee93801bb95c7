"""Work that needs only the frame, done on a second core while the U-Net pass runs its serial steps.

The U-Net path of :func:`~napari_xrd.core.spots.find_spots` spends about
half its time in single-threaded NumPy (the input's background, labelling,
splitting), when the network's second thread has nothing to do.  The steps
that depend on the frame alone (the beamstop's shadow, the binned frame and
its background for the large-spot pass, the smoothed counts that the
splitter reads) start at once in one worker thread
and are collected when needed: NumPy releases the interpreter lock in its
loops, so the two run side by side.  The results are the same as when each
step runs where it is needed; with ``concurrent=False`` (one thread asked
for: one process per core when screening) they are computed only then, so
nothing is computed that is not used.
"""

from __future__ import annotations

import functools

__all__ = ["SideJobs"]


class SideJobs:
    """Jobs run in one worker thread in the order given, or deferred until their result is asked for.

    Parameters
    ----------
    concurrent : bool
        Start the jobs at once in a worker thread; else run each one when
        :meth:`result` is first asked for it.

    Examples
    --------
    >>> with SideJobs(concurrent=True) as jobs:
    ...     jobs.submit("total", sum, [1, 2, 3])
    ...     jobs.result("total")
    6
    """

    def __init__(self, concurrent: bool):
        self.concurrent = bool(concurrent)
        self._executor = None
        self._jobs = {}

    def submit(self, name: str, fn, *args, **kwargs) -> None:
        """Add a job; it starts now if concurrent."""
        if self.concurrent:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-xrd-side")
            self._jobs[name] = self._executor.submit(fn, *args, **kwargs)
        else:
            self._jobs[name] = functools.partial(fn, *args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._jobs

    def result(self, name: str):
        """The job's return value (its exception is raised here)."""
        job = self._jobs[name]
        if callable(job):  # deferred: run it now, once
            value = job()
            self._jobs[name] = _Done(value)
            return value
        return job.result()

    def close(self) -> None:
        """Drop jobs not yet started; a running one finishes in its thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Done:
    """A deferred job's value, with a future's ``result``."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value
