"""Integrated spot significance: pedestal- and gain-robust, and the find_spots filter built on it."""

import numpy as np
import pytest

from napari_xrd.core.spots import find_spots, spot_table
from napari_xrd.core.spots.significance import spot_significance

SPOTS = [(40.5, 40.5, 60.0), (120.5, 50.5, 150.0), (60.5, 130.5, 600.0), (140.5, 140.5, 30.0)]  # x, y, photons


def _frame(background, seed=0, pedestal=0.0, read_noise=0.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:180, :180]
    lam = np.full((180, 180), background, dtype=float)
    for x, y, ph in SPOTS:
        lam += ph / (2 * np.pi) * np.exp(-((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) / 2.0)
    img = rng.poisson(lam).astype(float) + pedestal + rng.normal(0, read_noise, lam.shape) if read_noise else (
        rng.poisson(lam).astype(float) + pedestal)
    # label each true spot by a 5 x 5 box (as a finder would: spot pixels only)
    lab = np.zeros((180, 180), np.int32)
    for k, (x, y, _) in enumerate(SPOTS, start=1):
        lab[int(y) - 2: int(y) + 3, int(x) - 2: int(x) + 3] = k
    return img, lab


@pytest.mark.parametrize("background", [0.05, 5.0, 40.0])
def test_snr_follows_photon_statistics(background):
    # averaged over frames: one frame's SNR scatters by about 1 (that is what an SNR is)
    snrs, bgs = [], []
    for seed in range(12):
        img, lab = _frame(background, seed=seed)
        bg, snr = spot_significance(lab, img, spot_table(lab, img))
        snrs.append(snr)
        bgs.append(bg)
    snr, bg = np.mean(snrs, axis=0), np.mean(bgs, axis=0)
    for k, (_, _, ph) in enumerate(SPOTS):
        signal = 0.92 * ph  # a sigma-1 Gaussian's share in a 5 x 5 box
        expected = signal / np.sqrt(25 * background + signal)
        assert abs(snr[k] - expected) < 1.0 + 0.1 * expected, (k, snr[k], expected)  # errs towards keeping
    # the median of Poisson counts is an integer below the mean at low counts; near it at higher ones
    assert np.all(bg <= 25 * background + 1) and np.all(bg >= 25 * (background - 1))


def test_a_ccd_pedestal_and_read_noise_do_not_change_it_much():
    img, lab = _frame(5.0)
    ccd, _ = _frame(5.0, pedestal=25.0, read_noise=2.0)
    _, snr = spot_significance(lab, img, spot_table(lab, img))
    _, snr_ccd = spot_significance(lab, ccd, spot_table(lab, ccd))
    # read noise (variance 4) adds to the Poisson variance 5: the SNR of background-limited spots drops by up to
    # sqrt(9/5); the pedestal itself must not enter (it would more than halve it)
    ratio = snr_ccd / snr
    assert np.all(ratio > 0.65) and np.all(ratio < 1.1)


def test_find_spots_min_spot_snr_drops_weak_spots_and_renumbers():
    img, _ = _frame(5.0, seed=3)
    full = find_spots(img, method="dispersion", min_spot_snr=0)
    assert "snr" in full.table and np.isfinite(full.table["snr"]).all()
    assert np.all(np.isfinite(full.table["background"]))
    cut = 15.0
    strong = find_spots(img, method="dispersion", min_spot_snr=cut)
    assert 0 < strong.table.n_spots < full.table.n_spots
    assert np.all(strong.table["snr"] >= cut)
    assert strong.labels.max() == strong.table.n_spots
    assert set(np.unique(strong.labels)) == set(range(strong.table.n_spots + 1))
    # dispersion's default filters nothing (its per-pixel tests are DIALS's)
    assert find_spots(img, method="dispersion").table.n_spots == full.table.n_spots


def test_unet_default_drops_spots_below_snr_2_5(monkeypatch):
    import napari_xrd.core.spots as spots

    img, _ = _frame(5.0, seed=3)
    assigned = np.array([2.4, 2.6, 2.9, 3.5, 2.0, 8.0])

    def fake(labels, image, table, pixel_mask=None):
        n = len(table)
        return np.zeros(n), np.resize(assigned, n)

    monkeypatch.setattr(spots, "spot_significance", fake)
    full = find_spots(img, method="unet", device="cpu", min_spot_snr=0)
    n = full.table.n_spots
    assert n >= 3  # the four spots of the frame (at least the three bright ones)
    kept = find_spots(img, method="unet", device="cpu")
    # 2.6 and 2.9 stay (the old default of 3 dropped them); 2.4 and 2.0 go
    assert kept.table.n_spots == int((np.resize(assigned, n) >= 2.5).sum())
    assert np.all(kept.table["snr"] >= 2.5) and np.any(kept.table["snr"] < 3.0)
