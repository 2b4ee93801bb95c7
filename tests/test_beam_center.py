"""Beam centre and tilt from the image: estimators on small synthetic frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_xrd.core.beam_center import estimate_beam_center
from napari_xrd.core.beam_center.friedel import centrosymmetry_center
from napari_xrd.core.beam_center.heuristic import bresenham_line, heuristic_beam_center
from napari_xrd.core.beam_center.rings import fit_rings
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import GAP
from napari_xrd.core.training.beam_center import render_frame


def small_geometry(center=(312.4, 287.7), pitch=0.0, yaw=0.0, shape=(600, 620)):
    # a 600 x 620 detector of 0.3 mm pixels at 150 mm: ice rings at 2θ 15-32°
    return DetectorGeometry(shape, 0.3, 150.0, center, 1.0, pitch=pitch, yaw=yaw)


def center_error(result, geometry):
    (f, s), (f0, s0) = result.beam_center_px, geometry.beam_center
    return math.hypot(f - f0, s - s0)


# ------------------------------------------------------------------ rings
@pytest.mark.parametrize("pitch,yaw", [(2.0, -1.5), (-2.5, 0.8)])
def test_ice_rings_on_tilted_detector_give_centre_and_tilt(pitch, yaw):
    true = small_geometry(pitch=pitch, yaw=yaw)
    img, mask = render_frame(true, water=0.5, ice=3.0, n_spots=30, gaps=False, counts=200, seed=3)
    header = true.replace(beam_center=(300.0, 300.0), pitch=0.0, yaw=0.0)  # 13 px off, untilted
    r = estimate_beam_center(img, geometry=header, pixel_mask=mask, method="rings")
    assert r.method == "rings"
    assert r.tilt_determined
    assert center_error(r, true) < 0.3
    assert abs(r.pitch_deg - pitch) < 0.1 and abs(r.yaw_deg - yaw) < 0.1
    assert abs(r.tilt_deg - true.tilt_deg) < 0.1
    assert r.details["rings"]["n_rings"] >= 3
    # every ring used is an ice ring (no spurious ones)
    from napari_xrd.core.training.beam_center import ICE_D_SPACINGS

    for d in r.details["rings"]["d_spacing_A"]:
        assert min(abs(d - ice) for ice in ICE_D_SPACINGS) < 0.02


@pytest.mark.parametrize("pitch,yaw", [(2.0, -1.5), (-2.5, 0.8)])
def test_radial_fit_gives_centre_and_tilt_from_rings_and_background(pitch, yaw):
    true = small_geometry(pitch=pitch, yaw=yaw)
    img, mask = render_frame(true, water=0.5, ice=3.0, n_spots=30, gaps=False, counts=200, seed=3)
    header = true.replace(beam_center=(300.0, 300.0), pitch=0.0, yaw=0.0)
    r = estimate_beam_center(img, geometry=header, pixel_mask=mask)
    rad = r.details["radial"]
    assert math.dist(rad["beam_center_px"], true.beam_center) < 0.3
    assert abs(rad["pitch_deg"] - pitch) < 0.1 and abs(rad["yaw_deg"] - yaw) < 0.1
    assert rad["center_sigma_px"] < 0.3
    # the answer: the radial fit's, or the spots' where they are surer than
    # its leave-one-quadrant-out spread allows (sharp rings)
    assert r.method in ("radial", "friedel pairs", "lattice", "rings") and r.tilt_determined
    assert center_error(r, true) < 0.3
    assert abs(r.pitch_deg - pitch) < 0.1 and abs(r.yaw_deg - yaw) < 0.1


def test_radial_fit_on_a_smooth_halo_without_rings():
    # air scatter only: no ring to trace, but the halo's slope pins the centre
    true = small_geometry(pitch=1.0, yaw=-0.5)
    tt = true.two_theta_map()
    expected = 200 * np.exp(-np.degrees(tt) / 6.0) * true.solid_angle_map() + 5.0
    img = np.random.default_rng(4).poisson(expected).astype(float)
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(330.0, 270.0), pitch=0.0, yaw=0.0))
    assert r.method.startswith("radial")
    assert center_error(r, true) < 0.5
    assert r.uncertainty_px < 1.0


def test_one_sided_arc_does_not_give_a_confident_wrong_centre():
    # loop scattering: a ring that is bright on one side only, over a weak water ring
    true = small_geometry()
    tt, az = true.two_theta_map(), true.azimuth_map()
    water = 20 * np.exp(-0.5 * ((tt - 0.30) / 0.05) ** 2)
    arc = 200 * np.exp(-0.5 * ((tt - 0.20) / 0.05) ** 2) * np.exp(2.0 * (np.cos(az - 0.5) - 1))
    img = np.random.default_rng(6).poisson((10 + water + arc) * true.solid_angle_map()).astype(float)
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(300.0, 300.0)))
    # the arc pulls the fit (about 7 px here); the answer must say it is unsure
    assert center_error(r, true) < 3 * r.uncertainty_px
    assert r.method != "radial"
    assert r.details["radial"]["non_radial"]


def test_radial_fit_on_flat_frame_is_not_trusted():
    from napari_xrd.core.beam_center.radial import fit_radial_background

    true = small_geometry()
    img = np.random.default_rng(5).poisson(30.0, true.shape).astype(float)
    fit = fit_radial_background(img, geometry=true.replace(beam_center=(300.0, 300.0)))
    # nothing radial to fit: the model explains next to none of the image's variance
    assert fit.contrast < 0.05 or not fit.center_sigma_px < 3.0
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(300.0, 300.0)))
    assert not r.method.startswith("radial")


def test_gaps_dead_pixels_and_beamstop_do_not_bias_the_ring_fit():
    true = small_geometry(pitch=1.0, yaw=1.0)
    img, mask = render_frame(true, water=0.5, ice=3.0, n_spots=30, gaps=False, counts=200, seed=5)
    clean = estimate_beam_center(img, geometry=true.replace(pitch=0, yaw=0), pixel_mask=mask)
    mask = mask.copy()
    mask[:, 300:310] |= GAP  # a vertical gap through the centre
    mask[150:160, :] |= GAP
    mask[:200, 330:420] |= GAP  # a big dead region cutting the rings
    img = img.copy()
    img[mask > 0] = -1
    gapped = estimate_beam_center(img, geometry=true.replace(pitch=0, yaw=0), pixel_mask=mask)
    assert center_error(gapped, true) < 0.3
    assert abs(gapped.beam_center_px[0] - clean.beam_center_px[0]) < 0.3
    assert abs(gapped.pitch_deg - 1.0) < 0.15 and abs(gapped.yaw_deg - 1.0) < 0.15


def test_single_ring_says_tilt_is_not_determined():
    true = small_geometry()
    tt = true.two_theta_map()
    rng = np.random.default_rng(2)
    img = rng.poisson(50 + 400 * np.exp(-0.5 * ((tt - 0.35) / 0.01) ** 2)).astype(float)
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(305.0, 295.0)), method="rings")
    assert r.method.startswith("rings")
    assert not r.tilt_determined
    assert r.tilt_uncertainty_deg is None and r.pitch_deg == 0.0 and r.yaw_deg == 0.0
    assert center_error(r, true) < 0.5


def test_fit_rings_on_exact_conic_points():
    true = small_geometry(pitch=1.5, yaw=-2.0)
    pts = [true.ring_points(d, n=180) for d in (3.9, 3.0, 2.25)]
    start = true.replace(beam_center=(310.0, 290.0), pitch=0.0, yaw=0.0)
    fit = fit_rings(pts, start)
    assert fit.tilt_determined
    np.testing.assert_allclose(fit.geometry.beam_center, true.beam_center, atol=1e-3)
    assert abs(fit.geometry.pitch - 1.5) < 1e-3 and abs(fit.geometry.yaw + 2.0) < 1e-3


# ------------------------------------------------------------------ Friedel
def test_friedel_spots_on_flat_background_give_centre():
    true = small_geometry(center=(331.3, 268.6))
    img, mask = render_frame(
        true, water=0.0, flat=1.0, n_spots=400, friedel_fraction=0.9, gaps=False, beamstop=True, counts=20, seed=7
    )
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(310.0, 300.0)), pixel_mask=mask)
    assert r.method == "friedel pairs"
    assert center_error(r, true) < 0.2
    assert r.tilt_deg < 0.1


def test_centrosymmetry_of_a_point_symmetric_image_is_exact():
    rng = np.random.default_rng(0)
    h, w = 200, 240
    c = (131.0, 97.5)  # (fast, slow) corner convention
    img = np.zeros((h, w))
    pts = rng.uniform([20, 20], [100, 80], (60, 2))
    for dx, dy in pts - np.array([60, 50]):
        for sx, sy in ((dx, dy), (-dx, -dy)):
            f, s = c[0] + sx, c[1] + sy
            img[int(s), int(f)] += 100  # pixel (int(s), int(f)) holds centre (int(f)+.5, int(s)+.5)
    img += rng.poisson(2.0, img.shape)
    # reflection of pixel centres about c maps integers+.5 to integers+.5 only for these c
    (f, s), d = centrosymmetry_center(img, remove_shadow=False)
    assert abs(f - c[0]) < 0.6 and abs(s - c[1]) < 0.6


def test_masked_half_plane_does_not_move_the_symmetry_centre():
    true = small_geometry(center=(301.2, 305.9))
    img, mask = render_frame(true, water=0.0, flat=1.0, n_spots=400, friedel_fraction=0.9, gaps=False,
                             beamstop=False, counts=20, seed=9)
    (f0, s0), _ = centrosymmetry_center(img, pixel_mask=mask)
    mask = mask.copy()
    mask[:, 450:] |= GAP
    (f1, s1), _ = centrosymmetry_center(img, pixel_mask=mask)
    assert math.hypot(f1 - f0, s1 - s0) < 0.5


# ------------------------------------------------------------------ heuristic
def test_bresenham_line_is_connected_and_hits_both_ends():
    line = bresenham_line(3, 2, -4, 11)
    assert tuple(line[0]) == (3, 2) and tuple(line[-1]) == (-4, 11)
    steps = np.abs(np.diff(line, axis=0))
    assert steps.max() == 1  # 8-connected
    assert len(line) == 10  # max(|dr|, |dc|) + 1


def test_heuristic_lands_in_the_beamstop_shadow():
    # diffuse scatter about c, a beamstop shadow at c with its arm to the right
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512] + 0.5
    c = (270.0, 250.0)
    r = np.hypot(xx - c[0], yy - c[1])
    img = 100 * np.exp(-r / 150) + rng.poisson(5, r.shape)
    img[(r < 15) | ((xx > c[0]) & (np.abs(yy - c[1]) < 4))] = 1
    (f, s), details = heuristic_beam_center(img)
    assert details["n_candidates"] > 1
    assert math.hypot(f - c[0], s - c[1]) < 15  # inside the shadow: the baseline is coarse
    r = estimate_beam_center(img, method="heuristic")
    assert r.method == "heuristic" and r.beam_center_px == pytest.approx((f, s))
    assert not r.tilt_determined


# ------------------------------------------------------------------ input checks
def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="2-D"):
        estimate_beam_center(np.zeros(100))
    with pytest.raises(ValueError, match="valid"):
        estimate_beam_center(np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match="pixel_mask shape"):
        estimate_beam_center(np.ones((64, 64)), pixel_mask=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="method"):
        estimate_beam_center(np.ones((64, 64)), method="magic")
    g = small_geometry()
    with pytest.raises(ValueError, match="does not match"):
        estimate_beam_center(np.ones((64, 64)), geometry=g)


def test_result_json_has_the_documented_fields():
    true = small_geometry(pitch=1.0)
    img, mask = render_frame(true, water=0.5, ice=3.0, n_spots=10, gaps=False, counts=200, seed=1)
    d = estimate_beam_center(img, geometry=true.replace(pitch=0), pixel_mask=mask).to_dict()
    for key in ("beam_center_px", "beam_center_mm", "pitch_deg", "yaw_deg", "tilt_deg", "tilt_direction_deg",
                "uncertainty_px", "method"):
        assert key in d
    assert d["beam_center_mm"][0] == pytest.approx(d["beam_center_px"][0] * 0.3)
    import json

    json.dumps(d)  # serialisable (no NaN/inf objects)


def test_flat_frame_with_friedel_mates_on_a_tilted_detector():
    # no radial background worth the name (a flat level: only solid angle and
    # polarisation vary), but spots with mates: the pairs give centre and tilt
    true = small_geometry(center=(331.3, 268.6), pitch=2.0, yaw=-1.2)
    img, mask = render_frame(true, water=0.0, flat=1.0, n_spots=150, friedel_fraction=0.8, gaps=False,
                             beamstop=True, counts=20, seed=12)
    header = true.replace(beam_center=(320.0, 280.0), pitch=0.0, yaw=0.0)
    r = estimate_beam_center(img, geometry=header, pixel_mask=mask)
    assert r.method == "friedel pairs"
    assert center_error(r, true) < 0.2 and r.uncertainty_px < 0.2
    assert abs(r.pitch_deg - true.pitch) < 0.1 and abs(r.yaw_deg - true.yaw) < 0.1


def test_still_without_rings_or_pairs_says_it_is_unsure():
    # a flat background with a few unpaired spots: only the solid angle's
    # fall-off hints at the centre
    true = small_geometry(center=(331.3, 268.6))
    img, mask = render_frame(true, water=0.0, flat=1.0, n_spots=40, friedel_fraction=0.0, gaps=False,
                             beamstop=False, counts=20, seed=11)
    r = estimate_beam_center(img, geometry=true, pixel_mask=mask)
    assert not r.method.startswith(("friedel pairs", "lattice", "rings")) and r.method not in ("radial", "beamstop")
    assert r.uncertainty_px >= 3
    assert center_error(r, true) < 3 * r.uncertainty_px


def test_beamstop_disc_gives_the_centre_of_a_flat_frame():
    from napari_xrd.core.beam_center.beamstop import find_beamstop
    from napari_xrd.core.simulate.background import beamstop_transmission

    true = small_geometry(center=(331.3, 268.6))
    rng = np.random.default_rng(12)
    shadow = beamstop_transmission(true.shape, true.beam_center, radius_px=9.0, arm_angle_deg=60.0,
                                   arm_width_px=3.0, transmission=0.01)
    img = rng.poisson(20.0 * shadow).astype(float)
    mask = np.zeros(true.shape, np.uint32)
    mask[250:260, :] = GAP  # a module gap across the disc's lower half
    img[mask > 0] = -1
    bs = find_beamstop(img, mask == 0, pixel_size=true.pixel_size, near=(300, 300))
    assert bs is not None
    assert math.hypot(bs["beam_center_px"][0] - 331.3, bs["beam_center_px"][1] - 268.6) < 0.5
    assert abs(bs["radius_px"] - 9.0) < 1.0 and abs(bs["arm_angle_deg"] - 60.0) < 15
    r = estimate_beam_center(img, geometry=true.replace(beam_center=(300.0, 300.0)), pixel_mask=mask)
    assert r.method in ("beamstop", "radial") and center_error(r, true) < 0.5
    # the disc's centre hidden in a module gap: its edge above and below the gap still pins it
    mask2 = np.zeros(true.shape, np.uint32)
    mask2[264:274, :] = GAP
    img2 = rng.poisson(20.0 * shadow).astype(float)
    img2[mask2 > 0] = -1
    bs2 = find_beamstop(img2, mask2 == 0, pixel_size=true.pixel_size, near=(300, 300))
    assert bs2 is not None
    assert math.hypot(bs2["beam_center_px"][0] - 331.3, bs2["beam_center_px"][1] - 268.6) < 1.0
    # a gap crossing with no shadow is no beamstop
    flat = rng.poisson(np.full(true.shape, 20.0)).astype(float)
    mask3 = np.zeros(true.shape, np.uint32)
    mask3[264:274, :] = GAP
    mask3[:, 320:330] = GAP
    assert find_beamstop(flat, mask3 == 0, pixel_size=true.pixel_size, near=(325, 269)) is None
    # a dark patch far from the beam is not taken for the beamstop
    far = np.full(true.shape, 20.0)
    far[20:60, 20:60] = 0
    assert find_beamstop(rng.poisson(far).astype(float), np.ones(true.shape, bool), pixel_size=0.3,
                         near=(310, 290), search_radius_px=100) is None


def test_ring_cross_check_refits_centre_and_tilt_from_a_radial_start():
    # the check that runs when a radial fit on sharp (ice) rings is unsure:
    # traced ridges from the radial geometry, refitted with the tilt
    from napari_xrd.core.beam_center import _ring_check

    true = small_geometry(pitch=1.5, yaw=-1.0)
    img, mask = render_frame(true, water=0.3, ice=3.0, n_spots=30, gaps=False, counts=150, seed=21)
    start = true.replace(beam_center=(true.beam_center[0] + 1.0, true.beam_center[1] - 0.8), pitch=1.0, yaw=-0.5)
    details = {}
    out = _ring_check(img, (mask == 0) & (img >= 0), start, details)
    assert out is not None and out[4] == "rings" and out[3]
    g = out[0]
    assert math.hypot(g.beam_center[0] - true.beam_center[0], g.beam_center[1] - true.beam_center[1]) < 0.3
    assert abs(g.pitch - 1.5) < 0.15 and abs(g.yaw + 1.0) < 0.15
    assert details["rings"]["n_rings"] >= 2


@pytest.mark.parametrize("offset_px, unsure", [(20.0, True), (0.8, False)])
def test_beamstop_far_from_a_faint_radial_fit_is_reported_unsure(monkeypatch, offset_px, unsure):
    """The decision rule alone: a radial fit too faint to answer (contrast
    0.1) and a beamstop disc; a disc far from the fit takes the distance as
    its uncertainty, a disc near it keeps its alignment's 0.2 mm."""
    import napari_xrd.core.beam_center as bc
    import napari_xrd.core.beam_center.beamstop as beamstop
    import napari_xrd.core.beam_center.radial as radial

    g = small_geometry()
    rng = np.random.default_rng(3)
    img = rng.poisson(5.0, g.shape).astype(np.float32)  # nothing to fit: no rings, no spots
    fit = radial.RadialFit(geometry=g, center_sigma_px=0.5, tilt_sigma_deg=float("inf"), contrast=0.1,
                           chi2=1.0, n_blocks=1000, factor=4)
    disc = {"beam_center_px": [g.beam_center[0] + offset_px, g.beam_center[1]], "radius_px": 15.0,
            "arm_angle_deg": None, "center_sigma_px": 0.05}
    monkeypatch.setattr(radial, "fit_radial_background", lambda *a, **k: fit)
    monkeypatch.setattr(beamstop, "find_beamstop", lambda *a, **k: dict(disc))
    monkeypatch.setattr(bc, "_resnet", lambda *a, **k: None)
    r = estimate_beam_center(img, geometry=g.replace(beam_center=(300.0, 300.0)))
    assert r.method == "beamstop"
    alignment = bc.BEAMSTOP_ALIGNMENT_MM / g.pixel_size
    if unsure:
        assert r.uncertainty_px >= offset_px - 1e-6
    else:
        assert r.uncertainty_px < alignment * 1.01


def test_a_blank_frame_gives_a_weak_answer_and_no_numpy_warnings():
    import warnings

    g = small_geometry()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = estimate_beam_center(np.zeros(g.shape, np.float32), geometry=g)
    assert r.uncertainty_px >= 5.0 and not r.tilt_determined


def test_dark_region_mask_ignores_the_surroundings_of_bright_spots():
    """On a dim frame, blocks round a strong Bragg spot are not "dark": the level leaves the spots out."""
    from napari_xrd.core.beam_center.friedel import _shadow

    rng = np.random.default_rng(5)
    shape = (2520, 2520)  # a Pilatus-sized frame: binned by 6 into the 420-px working image
    lam = np.full(shape, 1.0, dtype=np.float32)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    disc = (yy - 1260) ** 2 + (xx - 1250) ** 2 < 15**2
    lam[disc] = 0.0
    spots = [(400, 500), (1800, 1900), (2100, 450), (600, 2000), (1260, 1900), (1900, 1260)]
    sy, sx = np.mgrid[-8:9, -8:9]
    stamp = (2e5 / (2 * np.pi * 1.5**2) * np.exp(-(sy**2 + sx**2) / (2 * 1.5**2))).astype(np.float32)
    for y, x in spots:
        lam[y - 8 : y + 9, x - 8 : x + 9] += stamp
    img = rng.poisson(lam).astype(np.float32)
    dark = _shadow(img, np.ones(shape, bool))
    assert dark[disc].mean() > 0.9  # the beamstop's disc is found
    assert dark.sum() < 4 * disc.sum()  # and little else
    for y, x in spots:  # the blocks round each spot are open
        assert not dark[y - 60 : y + 61, x - 60 : x + 61].any()


def test_dark_region_mask_leaves_the_valleys_between_bright_rings():
    """Empty valleys between bright (spotty ice) rings are not shadow; the disc on the central halo is."""
    from napari_xrd.core.beam_center.friedel import _shadow

    rng = np.random.default_rng(6)
    shape = (2520, 2520)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(yy - 1260.0, xx - 1250.0)
    lam = (0.05 + 3.0 * np.exp(-r / 150.0)).astype(np.float32)
    for radius in (500, 580, 660, 740):  # rings of grains, 12 px wide, far brighter than the gaps
        lam += np.where(np.abs(r - radius) < 6, 8.0 * (rng.random(shape) < 0.3), 0.0).astype(np.float32)
    disc = r < 15
    lam[disc] = 0.0
    img = rng.poisson(lam).astype(np.float32)
    dark = _shadow(img, np.ones(shape, bool))
    assert dark[disc].mean() > 0.9
    valleys = (r > 515) & (r < 725) & (np.abs(r - 580) > 15) & (np.abs(r - 660) > 15)
    assert dark[valleys].mean() < 0.01


def test_radial_fit_on_spots_alone_is_not_overconfident():
    """A flat frame whose only 'radial' structure is the density of Bragg spots.

    The curvature of the fit claimed 0.16 px while the fit was 13 px off; the
    leave-one-quadrant-out spread now bounds the uncertainty from below.
    """
    from napari_xrd.core.beam_center.radial import fit_radial_background

    rng = np.random.default_rng(11)
    shape = (1200, 1200)
    g = DetectorGeometry(shape, 0.172, 150.0, (602.3, 597.8), 1.0)
    img = rng.poisson(0.3, shape).astype(np.float32)
    r = np.abs(rng.normal(0, 250, 3000))
    a = rng.uniform(0, 2 * np.pi, 3000)
    x, y = (602.3 + r * np.cos(a)).astype(int), (597.8 + r * np.sin(a)).astype(int)
    inside = (x > 2) & (x < 1197) & (y > 2) & (y < 1197)
    for xi, yi in zip(x[inside], y[inside]):
        img[yi - 1 : yi + 2, xi - 1 : xi + 2] += rng.poisson(200, (3, 3))
    fit = fit_radial_background(img, geometry=g.replace(beam_center=(590.0, 610.0)))
    assert not fit.sharp
    assert fit.center_sigma_px >= 0.5 * fit.quadrant_spread_px > 0.5
