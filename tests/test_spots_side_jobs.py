"""Side jobs of the U-Net path: run on a second core or deferred, with the same results either way."""

import threading

import numpy as np
import pytest

from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.coarse import binned_input, coarse_spot_mask
from napari_xrd.core.spots.side_jobs import SideJobs
from napari_xrd.core.spots.split import smoothed_counts, split_at_intensity_peaks
from tests.test_spots_coarse import GEOMETRY, _streaks


def test_concurrent_jobs_run_in_a_worker_thread_in_order():
    seen = []

    def job(name):
        seen.append((name, threading.current_thread() is threading.main_thread()))
        return name * 2

    with SideJobs(concurrent=True) as jobs:
        jobs.submit("a", job, "a")
        jobs.submit("b", job, "b")
        assert jobs.result("b") == "bb" and jobs.result("a") == "aa"
    assert seen == [("a", False), ("b", False)]


def test_deferred_jobs_run_once_and_only_when_asked():
    calls = []
    jobs = SideJobs(concurrent=False)
    jobs.submit("x", lambda: calls.append(1) or len(calls))
    jobs.submit("unused", lambda: calls.append(99))
    assert calls == []
    assert jobs.result("x") == 1 and jobs.result("x") == 1
    assert calls == [1] and "unused" in jobs and "other" not in jobs
    jobs.close()
    assert calls == [1]


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_jobs_error_is_raised_where_its_result_is_asked(concurrent):
    with SideJobs(concurrent=concurrent) as jobs:
        jobs.submit("bad", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            jobs.result("bad")


def test_binned_input_given_or_computed_gives_the_same_mask():
    image, _, _ = _streaks(1)
    found = np.zeros(image.shape, bool)
    given = coarse_spot_mask(image, found, geometry=GEOMETRY, device="cpu",
                             binned=binned_input(image, geometry=GEOMETRY))
    np.testing.assert_array_equal(given, coarse_spot_mask(image, found, geometry=GEOMETRY, device="cpu"))
    assert given.any()


def test_find_spots_is_the_same_with_side_jobs_on_a_second_core_or_deferred(monkeypatch):
    import napari_xrd.core.spots as spots

    image, _, _ = _streaks(2)
    image[150:170, 150:170] = 0  # a beamstop-like dark patch at the beam
    monkeypatch.setattr(spots, "_two_cores", lambda threads: True)
    a = find_spots(image, method="unet", geometry=GEOMETRY, device="cpu", large_spots="on")
    monkeypatch.setattr(spots, "_two_cores", lambda threads: False)
    b = find_spots(image, method="unet", geometry=GEOMETRY, device="cpu", large_spots="on")
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.table.n_spots == b.table.n_spots > 10
    for key in ("x", "y", "intensity", "beamstop_shadow", "ice_ring"):
        np.testing.assert_array_equal(a.table[key], b.table[key])


def test_splitter_with_smoothed_counts_given_cuts_the_same():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    lam = 1.0 + sum(300 * np.exp(-((xx - x) ** 2 + (yy - 20) ** 2) / 2.0) for x in (15, 20, 26))
    image = rng.poisson(lam).astype(np.float32)
    labels = (lam > 3).astype(np.int32)
    pixel_mask = np.zeros(image.shape, np.uint32)
    pixel_mask[5, 5] = 1
    given = split_at_intensity_peaks(labels, image, pixel_mask=pixel_mask,
                                     smooth=smoothed_counts(image, pixel_mask=pixel_mask))
    np.testing.assert_array_equal(given, split_at_intensity_peaks(labels, image, pixel_mask=pixel_mask))
    assert given.max() == 3  # three spots in one region, cut apart
    with pytest.raises(ValueError, match="differ in shape"):
        split_at_intensity_peaks(labels, image, smooth=np.zeros((4, 4)))
