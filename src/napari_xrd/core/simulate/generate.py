"""Write many random stills into a dataset, on all cores, deterministically.

Example ``i`` of a run with seed ``S`` is drawn from
``numpy.random.default_rng(SeedSequence([S, i]))``, so the dataset's content
does not depend on the number of worker processes or on scheduling.
"""

from __future__ import annotations

import os

import numpy as np

from napari_xrd.core.progress import CancelCallback, ProgressCallback, check_cancel, report

__all__ = ["example_rng", "simulate_example", "write_simulated_dataset"]


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of example ``index`` in a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def simulate_example(seed: int, index: int, options: dict):
    """Example ``index`` of a run (a :class:`~napari_xrd.core.dataset.Example`)."""
    from napari_xrd.core.simulate import common_crystal, random_still
    from napari_xrd.core.simulate.crystal import random_orientation

    rng = example_rng(seed, index)
    opts = dict(options)
    crystal = opts.pop("crystal", None)
    if crystal not in (None, "random"):
        crystal = common_crystal(crystal, orientation=random_orientation(rng),
                                 wilson_b=float(rng.uniform(10, 60)), structure_seed=int(rng.integers(0, 2**62)))
    else:
        crystal = None
    still = random_still(rng, crystal=crystal, **opts)
    return still.to_example(attrs={"run_seed": int(seed), "index": int(index)})


def _worker(job):
    seed, index, options = job
    return simulate_example(seed, index, options)


def write_simulated_dataset(
    path,
    n: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    examples_per_shard: int = 64,
    progress: ProgressCallback = None,
    cancel: CancelCallback = None,
    **options,
) -> int:
    """Simulate ``n`` random stills into the dataset at ``path``.

    Parameters
    ----------
    path : str or Path
        Dataset directory (created, or appended to).
    n : int
        Number of examples.
    seed : int
        Run seed; example ``i`` uses :func:`example_rng` ``(seed, i)``.
    workers : int, optional
        Processes (default: all cores); 1 runs in this process.
    examples_per_shard : int
    progress, cancel
        Callbacks (see :mod:`napari_xrd.core.progress`); on cancel, examples
        finished so far are committed and :class:`~napari_xrd.core.progress.Cancelled` is raised.
    **options
        Passed to :func:`~napari_xrd.core.simulate.random_still` (``detector``,
        ``shape``, ``anomalies``, ``style``, ...), plus ``crystal`` (a name of
        :data:`~napari_xrd.core.simulate.COMMON_CRYSTALS` or "random").

    Returns
    -------
    int
        Examples written.
    """
    from napari_xrd.core.dataset import DatasetWriter

    if n < 0:
        raise ValueError("n must be non-negative")
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    jobs = ((seed, i, options) for i in range(n))
    done = 0
    report(progress, 0, n, "simulating")
    with DatasetWriter(path, examples_per_shard=examples_per_shard) as writer:
        if workers == 1 or n <= 1:
            results = map(_worker, jobs)
            pool = None
        else:
            import multiprocessing as mp

            pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)
            results = pool.imap(_worker, jobs, chunksize=2)
        try:
            for ex in results:
                writer.add(ex)
                done += 1
                report(progress, done, n, "simulating")
                check_cancel(cancel)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return done
