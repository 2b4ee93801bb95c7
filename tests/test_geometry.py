"""The geometry model: Bragg's law, tilt conventions, rings, polar resampling."""

import math

import numpy as np
import pytest

from napari_xrd.core.geometry import (
    DetectorGeometry,
    d_spacing_from_two_theta,
    rotation_matrix,
    two_theta_from_d_spacing,
)


def make(**kw):
    base = dict(shape=(400, 300), pixel_size=0.1, distance=100.0, beam_center=(150.0, 200.0), wavelength=1.0)
    base.update(kw)
    return DetectorGeometry(**base)


def test_bragg_round_trip():
    d = np.array([50.0, 3.9, 2.0, 0.9])
    tt = two_theta_from_d_spacing(d, 1.0)
    assert np.allclose(d_spacing_from_two_theta(tt, 1.0), d)
    assert math.isnan(two_theta_from_d_spacing(0.4, 1.0))  # lambda/2d > 1: unreachable


def test_untilted_resolution_matches_hand_calculation():
    g = make()
    # 4 mm from the beam centre along fast at 100 mm: 2theta = atan(0.04)
    d = g.resolution_at(150.0 + 40.0, 200.0)
    assert d == pytest.approx(1.0 / (2 * math.sin(math.atan(0.04) / 2)), rel=1e-12)
    assert math.isinf(g.resolution_at(150.0, 200.0))


def test_maps_use_pixel_centres_in_corner_convention():
    g = make(beam_center=(0.5, 0.5))
    tt = g.two_theta_map()
    assert tt.shape == (400, 300)
    assert tt[0, 0] == 0.0  # the first pixel's centre is (0.5, 0.5)
    assert tt[0, 1] == pytest.approx(math.atan(0.1 / 100.0))
    az = g.azimuth_map()
    assert az[0, 5] == pytest.approx(0.0)  # along +fast
    assert az[5, 0] == pytest.approx(math.pi / 2)  # along +slow


def test_rotation_matrix_is_orthonormal_and_composed_as_documented():
    r = rotation_matrix(2.0, -1.5)
    assert np.allclose(r @ r.T, np.eye(3))
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert np.allclose(rotation_matrix(2.0, 0.0) @ rotation_matrix(0.0, -1.5), r)


@pytest.mark.parametrize("pitch,yaw", [(0.0, 0.0), (2.0, 0.0), (0.0, -3.0), (1.5, 2.5)])
def test_project_inverts_lab_coordinates(pitch, yaw):
    g = make(pitch=pitch, yaw=yaw)
    f = np.array([0.0, 37.2, 150.0, 299.9])
    s = np.array([3.0, 399.0, 200.0, 12.5])
    xyz = g.lab_coordinates(f, s)
    back = g.project(xyz)
    assert np.allclose(back[:, 0], f) and np.allclose(back[:, 1], s)
    # the beam centre stays where the beam hits the detector, whatever the tilt
    assert np.allclose(g.project([0.0, 0.0, 1.0]), g.beam_center)


def test_tilt_signs_and_direction():
    yawed = make(yaw=5.0)
    # positive yaw brings the high-fast side nearer to the sample
    assert yawed.lab_coordinates(290.0, 200.0)[2] < 100.0 < yawed.lab_coordinates(10.0, 200.0)[2]
    assert yawed.tilt_direction_deg == pytest.approx(0.0)
    pitched = make(pitch=5.0)
    # positive pitch moves the high-slow side away
    assert pitched.lab_coordinates(150.0, 390.0)[2] > 100.0
    assert pitched.tilt_direction_deg == pytest.approx(-90.0)
    both = make(pitch=3.0, yaw=4.0)
    assert both.tilt_deg == pytest.approx(math.degrees(math.acos(both.normal[2])))
    assert make().tilt_deg == 0.0 and make().tilt_direction_deg == 0.0
    # nearest point on the detector lies in the tilt direction
    g = make(pitch=-2.0, yaw=1.0, shape=(2001, 2001), beam_center=(1000.5, 1000.5))
    a = math.radians(g.tilt_direction_deg)
    near = g.lab_coordinates(1000.5 + 500 * math.cos(a), 1000.5 + 500 * math.sin(a))
    far = g.lab_coordinates(1000.5 - 500 * math.cos(a), 1000.5 - 500 * math.sin(a))
    assert np.linalg.norm(near) < np.linalg.norm(far)


@pytest.mark.parametrize("pitch,yaw", [(0.0, 0.0), (3.0, -2.0)])
def test_ring_points_have_the_ring_resolution(pitch, yaw):
    g = make(pitch=pitch, yaw=yaw, distance=80.0)
    pts = g.ring_points(3.0, n=90)
    assert len(pts) == 90
    d = g.resolution_at(pts[:, 0], pts[:, 1])
    assert np.allclose(d, 3.0, rtol=1e-9)


def test_tilted_ring_is_off_centre_ellipse():
    g = make(yaw=3.0, shape=(3000, 3000), beam_center=(1500.0, 1500.0))
    pts = g.ring_points(3.0, n=360)
    r = np.hypot(pts[:, 0] - 1500.0, pts[:, 1] - 1500.0)
    # the side tilted towards the sample (+fast) sees the ring at a smaller radius
    assert r[0] < r[180]
    assert make().ring_points(0.3).shape == (0, 2)  # beyond the Ewald limit


def test_polar_transform_straightens_rings_on_tilted_detector():
    g = make(shape=(201, 201), beam_center=(100.5, 100.5), pitch=2.0, yaw=-2.0, pixel_size=0.2, distance=50.0)
    tt = g.two_theta_map()
    ring_tt = two_theta_from_d_spacing(4.0, 1.0)
    image = np.exp(-0.5 * ((tt - ring_tt) / 0.004) ** 2)
    polar, tt_bins, az = g.polar_transform(image, n_radial=200, n_azimuth=72)
    assert polar.shape == (72, 200)
    peak_bins = np.nanargmax(polar, axis=1)
    assert np.ptp(tt_bins[peak_bins]) < 2 * (tt_bins[1] - tt_bins[0])
    assert abs(np.median(tt_bins[peak_bins]) - ring_tt) < tt_bins[1] - tt_bins[0]
    with pytest.raises(ValueError, match="shape"):
        g.polar_transform(np.zeros((5, 5)))


def test_radial_profile_recovers_ring():
    g = make(shape=(201, 201), beam_center=(100.5, 100.5), pixel_size=0.2, distance=50.0)
    ring_tt = two_theta_from_d_spacing(5.0, 1.0)
    image = np.exp(-0.5 * ((g.two_theta_map() - ring_tt) / 0.003) ** 2)
    valid = np.ones(g.shape, bool)
    valid[:, :60] = False
    for stat in ("mean", "median"):
        tt, prof = g.radial_profile(image, n_bins=150, valid=valid, statistic=stat)
        assert abs(tt[np.nanargmax(prof)] - ring_tt) < 2 * (tt[1] - tt[0])


def test_d_range_and_solid_angle():
    g = make()
    d_max, d_min = g.d_range()
    assert math.isinf(d_max)
    corner = g.resolution_at(300.0, 0.0)
    assert d_min == pytest.approx(min(corner, g.resolution_at(0.0, 0.0), g.resolution_at(300.0, 400.0)))
    off = make(beam_center=(-50.0, 200.0))
    assert math.isfinite(off.d_range()[0])
    sa = g.solid_angle_map()
    assert sa.max() <= 1.0 and sa[200, 150] == pytest.approx(1.0, abs=1e-5)


def test_serialisation_round_trip_and_validation():
    g = make(pitch=1.0, yaw=-0.5, name="pilatus6m")
    d = g.to_dict()
    assert d["beam_center_mm"] == pytest.approx([15.0, 20.0])
    assert DetectorGeometry.from_dict(d) == g
    assert g.replace(beam_center=(1.0, 2.0)).beam_center == (1.0, 2.0)
    for bad in (dict(pixel_size=0.0), dict(distance=-1.0), dict(wavelength=float("nan")), dict(shape=(0, 3)), dict(pitch=90.0)):
        with pytest.raises(ValueError):
            make(**bad)
