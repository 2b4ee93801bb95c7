"""Physics of the simulator, checked against independent calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.simulate import (
    SPOT_DTYPE,
    Crystal,
    common_crystal,
    random_orientation,
    random_still,
    simulate_from_params,
    simulate_still,
)

QUIET = dict(style="flat", flat_photons=0.0, beamstop=False, noise=False, marker_values=False)


def _reciprocal_basis_gemmi(cell):
    """a*, b*, c* as columns, from gemmi's fractionalisation matrix (independent of the simulator)."""
    import gemmi

    uc = gemmi.UnitCell(*cell)
    return np.array(uc.frac.mat.tolist()).T


def _lab_point(fast, slow, *, pixel, distance, bc, pitch, yaw):
    """Lab position of a detector point, written out from the documented convention R = Rx(pitch) Ry(yaw)."""
    p, y = math.radians(pitch), math.radians(yaw)
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    r = rx @ ry
    u = (np.asarray(fast) - bc[0]) * pixel
    v = (np.asarray(slow) - bc[1]) * pixel
    return np.stack([r[0, 0] * u + r[0, 1] * v, r[1, 0] * u + r[1, 1] * v, distance + r[2, 0] * u + r[2, 1] * v], -1)


def _centroids(image, fast, slow, half=6):
    out = []
    for f, s in zip(fast, slow):
        j0, i0 = int(f), int(s)
        win = image[i0 - half : i0 + half + 1, j0 - half : j0 + half + 1].astype(float)
        jj, ii = np.meshgrid(np.arange(j0 - half, j0 + half + 1) + 0.5, np.arange(i0 - half, i0 + half + 1) + 0.5)
        out.append(((win * jj).sum() / win.sum(), (win * ii).sum() / win.sum()))
    return np.array(out)


@pytest.fixture(scope="module")
def tilted_still():
    geom = DetectorGeometry((256, 256), 0.172, 90.0, (121.3, 140.8), 1.0, pitch=2.5, yaw=-1.7)
    crystal = common_crystal("lysozyme", orientation=random_orientation(np.random.default_rng(4)))
    still = simulate_still(geom, crystal, seed=1, d_min=1.6, mosaicity_deg=0.3, bandpass=1e-4,
                           spot_sigma_mm=0.1, psf_px=0.5, intensity_scale=1e4, **QUIET)
    return geom, crystal, still


def test_spot_centroids_match_bragg_ewald_prediction(tilted_still):
    geom, crystal, still = tilted_still
    spots = still.spots
    hkl = np.stack([spots["h"], spots["k"], spots["l"]], axis=1)
    # analytic prediction: r = U B h with B from gemmi, Bragg angle and azimuth of r, projected
    r = hkl @ (crystal.orientation @ _reciprocal_basis_gemmi(crystal.cell)).T
    rl = np.linalg.norm(r, axis=1)
    tt = 2 * np.arcsin(geom.wavelength * rl / 2)
    az = np.arctan2(r[:, 1], r[:, 0])
    pred = geom.project(np.stack([np.sin(tt) * np.cos(az), np.sin(tt) * np.sin(az), np.cos(tt)], -1))
    np.testing.assert_allclose(np.stack([spots["fast"], spots["slow"]], 1), pred, atol=1e-6)
    np.testing.assert_allclose(spots["d"], 1 / rl, rtol=1e-9)

    # measured centroids of isolated, well-inside, non-trivial spots on the noise-free image
    pos = pred
    dist = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    np.fill_diagonal(dist, np.inf)
    iso = (
        (dist.min(axis=1) > 14)
        & (spots["photons"] > 50)
        & (pos[:, 0] > 10) & (pos[:, 0] < 246) & (pos[:, 1] > 10) & (pos[:, 1] < 246)
    )
    assert iso.sum() >= 12, "test needs enough isolated spots"
    c = _centroids(still.image, pos[iso, 0], pos[iso, 1])
    err = np.hypot(*(c - pos[iso]).T)
    assert err.max() < 0.1, err.max()


def test_spot_photons_follow_intensity_partiality_and_lp(tilted_still):
    geom, crystal, still = tilted_still
    s = still.spots
    hkl = np.stack([s["h"], s["k"], s["l"]], axis=1)
    np.testing.assert_allclose(s["intensity"], crystal.intensities(hkl))
    np.testing.assert_allclose(s["photons"], 1e4 * s["intensity"] * s["partiality"] * s["lp"], rtol=1e-9)
    assert np.all((s["partiality"] > 0) & (s["partiality"] <= 1))
    # the image holds the photons of spots that fall fully on it
    inside = (s["fast"] > 15) & (s["fast"] < 241) & (s["slow"] > 15) & (s["slow"] < 241)
    assert still.image.sum() == pytest.approx(s["photons"].sum(), rel=0.05)
    assert inside.any()


def test_spot_size_grows_with_mosaicity_and_distance():
    crystal = common_crystal("lysozyme", orientation=random_orientation(np.random.default_rng(2)))

    def sizes(distance, mosaicity):
        g = DetectorGeometry((256, 256), 0.172, distance, (128, 128), 1.0)
        st = simulate_still(g, crystal, d_min=3.0, mosaicity_deg=mosaicity, **QUIET)
        return {(h, k, l): m for h, k, l, m in zip(st.spots["h"], st.spots["k"], st.spots["l"], st.spots["sigma_major"])}

    def ratio(a, b):
        common = sorted(set(a) & set(b))
        assert len(common) >= 10
        return np.median([a[key] / b[key] for key in common])

    assert ratio(sizes(100, 1.0), sizes(100, 0.1)) > 1.5  # same spots, more mosaic spread
    assert ratio(sizes(200, 1.0), sizes(100, 1.0)) > 1.3  # same spots, farther detector


def test_ring_radius_matches_d_spacing_on_tilted_detector():
    pixel, distance, bc, pitch, yaw = 0.172, 50.0, (140.2, 117.6), -2.8, 2.2
    geom = DetectorGeometry((256, 256), pixel, distance, bc, 1.0, pitch=pitch, yaw=yaw)
    crystal = common_crystal("lysozyme")
    ice = {"photons": 100.0, "sigma_s": 0.004, "spotty": False, "n_grains": 0, "seed": 0}
    still = simulate_still(geom, crystal, intensity_scale=0.0, anomalies={"ice_ring": ice}, **QUIET)
    img = still.image.astype(float)
    # ring peak along rays from the beam centre, located by a parabola through the maximum
    from scipy.ndimage import map_coordinates

    d_found = []
    for phi in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        rad = np.arange(20, 120, 0.25)
        f = bc[0] + rad * np.cos(phi)
        s = bc[1] + rad * np.sin(phi)
        ok = (f > 1) & (f < 255) & (s > 1) & (s < 255)
        prof = map_coordinates(img, [s[ok] - 0.5, f[ok] - 0.5], order=3)
        # the 3.895 Å ring is the innermost, search up to the 3.669 Å one
        two_theta_here = np.arctan2(np.hypot(*_lab_point(f[ok], s[ok], pixel=pixel, distance=distance, bc=bc,
                                                          pitch=pitch, yaw=yaw)[:, :2].T),
                                    _lab_point(f[ok], s[ok], pixel=pixel, distance=distance, bc=bc,
                                               pitch=pitch, yaw=yaw)[:, 2])
        d_here = 1.0 / (2 * np.sin(two_theta_here / 2))
        band = (d_here < 3.8) | (d_here > 4.0)
        prof = np.where(band, -np.inf, prof)
        k = int(np.argmax(prof))
        if not np.isfinite(prof[k]) or k == 0 or k == len(prof) - 1:
            continue
        a, b, c = prof[k - 1], prof[k], prof[k + 1]
        off = 0.5 * (a - c) / (a - 2 * b + c)
        rr = rad[ok][k] + off * 0.25
        p = _lab_point(bc[0] + rr * np.cos(phi), bc[1] + rr * np.sin(phi), pixel=pixel, distance=distance, bc=bc,
                       pitch=pitch, yaw=yaw)
        tt = math.atan2(math.hypot(p[0], p[1]), p[2])
        d_found.append(1.0 / (2 * math.sin(tt / 2)))
    assert len(d_found) >= 12
    np.testing.assert_allclose(d_found, 3.895, atol=0.006)  # each ray (ring sigma is 0.06 Å here)
    assert np.mean(d_found) == pytest.approx(3.895, abs=0.0015)


def test_friedel_mates_diffract_to_opposite_azimuths_with_equal_intensity():
    geom = DetectorGeometry((256, 256), 0.172, 150.0, (128.4, 127.7), 1.0, pitch=1.5, yaw=2.0)
    crystal = Crystal((120.0, 130.0, 140.0, 90, 90, 90), "P 21 21 21", random_orientation(np.random.default_rng(0)))
    still = simulate_still(geom, crystal, d_min=6.0, mosaicity_deg=1.0, **QUIET)
    s = still.spots
    index = {(h, k, l): i for i, (h, k, l) in enumerate(zip(s["h"], s["k"], s["l"]))}
    pairs = [(i, index[(-h, -k, -l)]) for (h, k, l), i in index.items() if (-h, -k, -l) in index and h >= 0]
    assert len(pairs) >= 4
    i, j = np.array(pairs).T
    tt_i = geom.two_theta_at(s["fast"][i], s["slow"][i])
    tt_j = geom.two_theta_at(s["fast"][j], s["slow"][j])
    np.testing.assert_allclose(tt_i, tt_j, atol=1e-9)
    daz = np.angle(np.exp(1j * (geom.azimuth_at(s["fast"][i], s["slow"][i]) - geom.azimuth_at(s["fast"][j], s["slow"][j]))))
    np.testing.assert_allclose(np.abs(daz), np.pi, atol=1e-9)
    np.testing.assert_allclose(s["intensity"][i], s["intensity"][j])
    # on an untilted detector the mates are point-symmetric about the beam centre
    flat = simulate_still(geom.replace(pitch=0.0, yaw=0.0), crystal, d_min=6.0, mosaicity_deg=1.0, **QUIET).spots
    idx = {(h, k, l): n for n, (h, k, l) in enumerate(zip(flat["h"], flat["k"], flat["l"]))}
    sym = [(idx[key], idx[tuple(-np.array(key))]) for key in idx if tuple(-np.array(key)) in idx]
    assert sym
    a, b = np.array(sym).T
    np.testing.assert_allclose(flat["fast"][a] + flat["fast"][b], 2 * 128.4, atol=1e-6)
    np.testing.assert_allclose(flat["slow"][a] + flat["slow"][b], 2 * 127.7, atol=1e-6)


def _all_hkl(crystal, d_min, d_max):
    n = 40
    g = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d = crystal.d_spacing(g)
    return g[(d >= d_min) & (d < d_max)]


def test_wilson_statistics_acentric_and_centric():
    crystal = Crystal((60.0, 70.0, 80.0, 90, 90, 90), "P 21 21 21", wilson_b=30.0, structure_seed=11)
    hkl = _all_hkl(crystal, 2.6, 3.2)
    # keep one of each Friedel pair (mates are identical by construction)
    hkl = hkl[(hkl[:, 0] > 0) | ((hkl[:, 0] == 0) & ((hkl[:, 1] > 0) | ((hkl[:, 1] == 0) & (hkl[:, 2] > 0))))]
    inten = crystal.intensities(hkl)
    d = crystal.d_spacing(hkl)
    z = inten / np.exp(-30.0 / (2 * d * d))  # normalised: epsilon = 1 for general reflections
    zeros = np.sum(hkl == 0, axis=1)
    general = zeros == 0
    # general reflections of P212121 are acentric: <I^2>/<I>^2 = 2, exponential distribution
    za = z[general]
    assert len(za) > 3000
    assert np.mean(za) == pytest.approx(1.0, abs=0.06)
    assert np.mean(za**2) / np.mean(za) ** 2 == pytest.approx(2.0, abs=0.2)
    assert np.mean(za < 1.0) == pytest.approx(1 - np.exp(-1), abs=0.03)  # exponential CDF at 1
    # zone reflections (one index 0, not absent) are centric: <I^2>/<I>^2 = 3
    zone = (zeros == 1) & (inten > 0)
    zc = z[zone]
    assert len(zc) > 300
    assert np.mean(zc**2) / np.mean(zc) ** 2 == pytest.approx(3.0, abs=0.6)


def test_wilson_falloff_follows_b_factor():
    crystal = Crystal((70.0, 70.0, 70.0, 90, 90, 90), "P 1", wilson_b=40.0, structure_seed=3)
    hkl = _all_hkl(crystal, 1.8, 12.0)
    inten = crystal.intensities(hkl)
    inv_d2 = 1 / crystal.d_spacing(hkl) ** 2
    edges = np.quantile(inv_d2, np.linspace(0, 1, 11))
    x, y = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (inv_d2 >= a) & (inv_d2 < b)
        x.append(inv_d2[sel].mean())
        y.append(np.log(inten[sel].mean()))
    slope = np.polyfit(x, y, 1)[0]
    assert slope == pytest.approx(-40.0 / 2, rel=0.08)


def test_symmetry_mates_share_intensity_and_absences_vanish():
    c = common_crystal("lysozyme", structure_seed=5)
    h = np.array([[3, 5, 7], [5, 3, -7], [-3, 5, -7], [-5, -3, 7], [-3, -5, -7]])
    i = c.intensities(h)
    np.testing.assert_allclose(i, i[0], rtol=1e-12)
    assert i[0] > 0
    absent = c.intensities(np.array([[0, 0, 1], [0, 0, 2], [0, 0, 3], [1, 0, 0], [3, 0, 0]]))
    present = c.intensities(np.array([[0, 0, 4], [0, 0, 8], [2, 0, 0]]))
    assert np.all(absent == 0) and np.all(present > 0)
    centred = Crystal((78, 78, 78, 90, 90, 90), "I 21 3")
    assert centred.intensities(np.array([[1, 2, 4]]))[0] == 0  # h+k+l odd
    assert centred.intensities(np.array([[1, 2, 3]]))[0] > 0


def test_given_structure_factors_are_used():
    hkl = np.array([[1, 2, 3], [2, 0, 0]])
    c = Crystal((50, 60, 70, 90, 90, 90), "P 21 21 21", structure_factors=(hkl, np.array([3.0, 5.0])))
    out = c.intensities(np.array([[1, 2, 3], [-1, 2, -3], [2, 0, 0], [4, 4, 4]]))
    np.testing.assert_allclose(out, [9.0, 9.0, 25.0, 0.0])


def test_partiality_falls_with_excitation_error(tilted_still):
    s = tilted_still[2].spots
    order = np.argsort(np.abs(s["partiality"]))
    assert s.dtype == SPOT_DTYPE
    assert s["partiality"][order[-1]] > 0.9 and s["partiality"][order[0]] < 0.1


def test_random_still_is_deterministic_and_reproducible_from_params():
    a = random_still(123, shape=(128, 128))
    b = random_still(123, shape=(128, 128))
    c = random_still(124, shape=(128, 128))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.spot_mask, b.spot_mask)
    assert a.params == b.params
    assert not np.array_equal(a.image, c.image)
    again = simulate_from_params(a.params)
    assert np.array_equal(again.image, a.image)
    assert np.array_equal(again.spots, a.spots)
    assert again.background is None
    with_bg = simulate_from_params(a.params, keep_background=True)
    assert np.array_equal(with_bg.image, a.image)
    assert with_bg.background.shape == a.image.shape and np.all(with_bg.background >= 0)
    assert with_bg.background.mean() > 0


def test_random_stills_vary_geometry_within_ranges():
    bcs, tilts, styles = [], [], set()
    for seed in range(30):
        st = random_still(seed, detector="pilatus6m", shape=(64, 64), anomalies="none", d_min=4.0)
        g = st.geometry
        centre = np.array([32.0, 32.0])
        bcs.append((np.array(g.beam_center) - centre) * g.pixel_size)
        tilts.append((g.pitch, g.yaw))
        styles.add(st.params["params"]["style"])
    bcs, tilts = np.array(bcs), np.array(tilts)
    assert np.all(np.abs(bcs) <= 5.0 + 1e-9) and np.ptp(bcs[:, 0]) > 4
    assert np.all(np.abs(tilts) <= 3.0) and np.ptp(tilts[:, 0]) > 2
    assert {"realistic", "flat"} <= styles


def test_spot_mask_truth_definition():
    geom = DetectorGeometry((256, 256), 0.172, 120.0, (130.0, 125.0), 1.0)
    crystal = common_crystal("trypsin", orientation=random_orientation(np.random.default_rng(9)))
    st = simulate_still(geom, crystal, seed=3, d_min=1.8, intensity_scale=3000, solvent_photons=5.0,
                        keep_background=True)
    s = st.spots
    assert st.spot_mask.any()
    assert not np.any(st.spot_mask & st.beamstop_mask)
    # every strong spot off the shadow has mask pixels at its centre; weak ones never qualify
    strong = s["in_mask"] & (s["snr"] >= 5)
    assert strong.sum() >= 5
    ix = np.floor(s["fast"][strong]).astype(int)
    iy = np.floor(s["slow"][strong]).astype(int)
    assert st.spot_mask[iy, ix].mean() > 0.95
    assert not np.any(s["in_mask"] & (s["snr"] < 3.0))
    # mask pixels lie where the noise-free spot signal beats the background noise
    back = st.background
    assert np.all(back[st.spot_mask] >= 0)
    # with no spots at all, no mask
    empty = simulate_still(geom, crystal, intensity_scale=0.0)
    assert not empty.spot_mask.any() and len(empty.spots) == 0



@pytest.mark.slow
def test_spot_mask_holds_weak_streaks():
    # a realistic Pilatus 6M still at 629 mm with 0.46° mosaicity: its spots are streaks (σ ~4 px),
    # and the weak ones (SNR 5-7) have no pixel above the noise rule; each must still have its core
    from napari_xrd.core.simulate.generate import example_rng

    st = random_still(example_rng(7000, 12), detector="pilatus6m", shape=None,
                      anomalies=["background_ring", "ice_ring"], style="realistic", beamstop=True, dead_fraction=3e-4)
    s = st.spots
    weak_streaks = s["in_mask"] & (s["snr"] >= 5) & (s["snr"] < 7) & (s["sigma_major"] >= 2)
    assert weak_streaks.sum() >= 20
    n_mask = np.array([st.spot_mask[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4].sum()
                       for x, y in zip(s["fast"][weak_streaks], s["slow"][weak_streaks])])
    assert np.mean(n_mask >= 5) > 0.95  # before the core rule, half of them had fewer than 2


def test_detector_gaps_markers_and_bad_pixels():
    from napari_xrd.core.detectors import get_detector
    from napari_xrd.core.masks import DEAD, GAP

    det = get_detector("pilatus6m")
    geom = det.geometry(200.0, 1.0, shape=(256, 246))
    st = simulate_still(geom, common_crystal("lysozyme"), detector=det, dead_fraction=1e-3, marker_values=True)
    gap = (st.pixel_mask & GAP) != 0
    assert np.array_equal(gap, det.gap_mask((256, 246)) != 0)
    assert np.all(st.image[gap] == -1)
    dead = ((st.pixel_mask & DEAD) != 0) & ~gap
    assert dead.any() and np.all(st.image[dead] == -2)
    assert not np.any(st.spot_mask & gap)
    assert np.all(st.image[~gap & ~dead] >= 0)


def test_ccd_readout_gain_offset_saturation():
    geom = DetectorGeometry((128, 128), 0.1, 100.0, (64, 64), 1.0)
    st = simulate_still(geom, common_crystal("lysozyme"), style="flat", flat_photons=100.0, gain=2.0, offset=40.0,
                        read_noise=5.0, saturation=300.0, beamstop=False, intensity_scale=0.0)
    v = st.image
    assert np.median(v) == pytest.approx(240.0, abs=3)  # 100 photons x 2 ADU + 40
    assert np.std(v) == pytest.approx(math.sqrt(4 * 100 + 25), rel=0.1)  # Poisson x gain + read noise
    assert v.max() <= 300.0


def test_ccd_point_spread_correlates_noise_between_neighbours():
    geom = DetectorGeometry((160, 160), 0.1, 100.0, (80, 80), 1.0)
    kw = dict(style="flat", flat_photons=50.0, beamstop=False, intensity_scale=0.0)
    plain = simulate_still(geom, common_crystal("lysozyme"), **kw).image
    ccd = simulate_still(geom, common_crystal("lysozyme"), ccd_psf_px=0.6, **kw).image

    def corr(v):
        r = v - v.mean()
        return np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1]

    assert abs(corr(plain)) < 0.05 and corr(ccd) > 0.3
    assert np.mean(ccd) == pytest.approx(50.0, abs=0.5) and np.std(ccd) < 0.8 * np.std(plain)


@pytest.mark.slow
def test_sample_pilatus_still_full_size():
    from napari_xrd.core.simulate import sample_pilatus_still

    st = sample_pilatus_still()
    assert st.image.shape == (2527, 2463)
    assert st.spot_mask.shape == st.image.shape and st.spot_mask.any()
    assert st.spots["in_mask"].sum() > 200
    assert st.anomalies == ["background_ring"]


def test_rotation_images_record_reflections_where_they_cross_the_sphere():
    geom = DetectorGeometry((256, 256), 0.172, 100.0, (128.0, 128.0), 1.0)
    u = random_orientation(np.random.default_rng(8))
    crystal = common_crystal("lysozyme", orientation=u)
    kw = dict(d_min=2.5, mosaicity_deg=0.05, **QUIET)
    still = simulate_still(geom, crystal, **kw).spots
    rot = simulate_still(geom, crystal, oscillation_deg=1.0, **kw).spots
    assert len(rot) > 3 * len(still)
    assert np.all((rot["partiality"] > 0) & (rot["partiality"] <= 1 + 1e-12))
    full = rot["partiality"] > 0.99
    assert full.sum() > 0.5 * len(rot)
    # brute force: the rotation angle in [0, 1°] about lab x where each reflection meets the sphere
    b = _reciprocal_basis_gemmi(crystal.cell)
    hkl = np.stack([rot["h"], rot["k"], rot["l"]], 1)[full]
    r0 = hkl @ (u @ b).T
    phis = np.radians(np.linspace(0.0, 1.0, 2001))
    c, s = np.cos(phis), np.sin(phis)
    ry = r0[:, None, 1] * c - r0[:, None, 2] * s
    rz = r0[:, None, 1] * s + r0[:, None, 2] * c
    eps = np.abs(np.sqrt(r0[:, None, 0] ** 2 + ry**2 + (rz + 1.0) ** 2) - 1.0)
    k = np.argmin(eps, axis=1)
    n = np.arange(len(k))
    az_expected = np.arctan2(ry[n, k], r0[:, 0])
    az_found = geom.azimuth_at(rot["fast"][full], rot["slow"][full])
    np.testing.assert_allclose(np.angle(np.exp(1j * (az_found - az_expected))), 0.0, atol=2e-3)
    tt = geom.two_theta_at(rot["fast"][full], rot["slow"][full])
    np.testing.assert_allclose(tt, 2 * np.arcsin(1.0 / (2 * rot["d"][full])), atol=1e-9)


def test_integer_counts_option():
    geom = DetectorGeometry((64, 64), 0.172, 100.0, (32, 32), 1.0)
    a = simulate_still(geom, common_crystal("lysozyme"), seed=4)
    b = simulate_still(geom, common_crystal("lysozyme"), seed=4, dtype="int32")
    assert b.image.dtype == np.int32 and a.image.dtype == np.float32
    np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="dtype"):
        simulate_still(geom, common_crystal("lysozyme"), dtype="uint8")
    with pytest.raises(ValueError, match="unknown simulation parameter"):
        simulate_still(geom, common_crystal("lysozyme"), mosaicity=0.2)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(mosaicity_deg=-0.1), "mosaicity_deg must be a non-negative"),
        (dict(d_min=0.0), "d_min must be a positive"),
        (dict(intensity_scale=float("nan")), "intensity_scale"),
        (dict(style="fancy"), "style must be"),
        (dict(min_partiality=0.0), "min_partiality"),
    ],
)
def test_bad_parameters_fail_clearly(kw, message):
    geom = DetectorGeometry((32, 32), 0.172, 100.0, (16, 16), 1.0)
    with pytest.raises(ValueError, match=message):
        simulate_still(geom, common_crystal("lysozyme"), **kw)


def test_wrong_argument_types_fail_clearly():
    geom = DetectorGeometry((32, 32), 0.172, 100.0, (16, 16), 1.0)
    with pytest.raises(TypeError, match="geometry must be a DetectorGeometry"):
        simulate_still({"shape": (32, 32)}, common_crystal("lysozyme"))
    with pytest.raises(TypeError, match="crystal must be a Crystal"):
        simulate_still(geom, "lysozyme")
    with pytest.raises(ValueError, match="unknown space group"):
        Crystal((50, 50, 50, 90, 90, 90), "P 7")
    with pytest.raises(ValueError, match="impossible unit cell"):
        Crystal((50, 50, 50, 150, 150, 150), "P 1")
    with pytest.raises(ValueError, match="unknown anomaly"):
        simulate_still(geom, common_crystal("lysozyme"), anomalies=["ice"])


@pytest.mark.parametrize("oscillation", [0.0, 0.5])
def test_reflection_search_finds_exactly_the_brute_force_set(oscillation):
    from napari_xrd.core.simulate.still import predict_reflections

    geom = DetectorGeometry((300, 300), 0.2, 60.0, (150.0, 150.0), 1.2)
    crystal = Crystal((41.0, 53.0, 67.0, 80.0, 95.0, 104.0), "P 1", random_orientation(np.random.default_rng(6)))
    kw = dict(d_min=2.5, mosaicity_deg=0.4, bandpass=2e-3, min_partiality=1e-3, margin_px=1e9,
              oscillation_deg=oscillation)
    found = predict_reflections(geom, crystal.UB, **kw)
    # brute force over the whole lattice inside the resolution sphere
    n = 30
    hkl = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = hkl @ crystal.UB.T
    rl = np.linalg.norm(r, axis=1)
    inside = (rl > 0) & (rl <= 1 / 2.5)
    hkl, r, rl = hkl[inside], r[inside], rl[inside]
    lam = 1.2
    s0 = np.array([0, 0, 1 / lam])
    fwhm = 2 * np.sqrt(2 * np.log(2))
    sig = np.sqrt((rl * np.radians(0.4) / fwhm) ** 2 + (lam * rl**2 / 2 * 2e-3 / fwhm) ** 2 + 1e-12)
    if oscillation == 0:
        eps = np.linalg.norm(r + s0, axis=1) - 1 / lam
        part = np.exp(-0.5 * (eps / sig) ** 2)
    else:
        # sample the rotation finely: the best excitation error over the exposure
        from scipy.special import ndtr

        phis = np.radians(np.linspace(0, oscillation, 201))
        c, s = np.cos(phis), np.sin(phis)
        ry = r[:, None, 1] * c - r[:, None, 2] * s
        rz = r[:, None, 1] * s + r[:, None, 2] * c
        eps = np.sqrt(r[:, None, 0] ** 2 + ry**2 + (rz + 1 / lam) ** 2) - 1 / lam
        part = np.abs(ndtr(eps[:, -1] / sig) - ndtr(eps[:, 0] / sig))
    expected = {tuple(h) for h in hkl[part >= 1.5e-3]}
    got = {tuple(h) for h in found["hkl"]}
    assert len(expected) > 100
    assert expected <= got  # nothing missed
    borderline = {tuple(h) for h in hkl[part >= 0.5e-3]}
    assert got <= borderline  # nothing far below the partiality cut
