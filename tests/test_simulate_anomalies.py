"""Each anomaly class changes the image where and how it should, and is labelled."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xrd.core.detectors import get_detector
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.simulate import (
    ANOMALY_CLASSES,
    ICE_RINGS,
    common_crystal,
    random_orientation,
    random_still,
    simulate_still,
)
from napari_xrd.core.simulate.anomalies import draw_anomaly_params, label_vector

GEOM = DetectorGeometry((192, 192), 0.3, 60.0, (97.0, 94.5), 1.0, pitch=1.0, yaw=-2.0)
CRYSTAL = common_crystal("trypsin", orientation=random_orientation(np.random.default_rng(1)))
BASE = dict(noise=False, beamstop=False, solvent_photons=5.0, air_photons=2.0, d_min=2.0, marker_values=False)


def _pair(name, params=None, **kw):
    p = params or draw_anomaly_params(name, np.random.default_rng(5), level=5.0)
    clean = simulate_still(GEOM, CRYSTAL, seed=2, **{**BASE, **kw})
    dirty = simulate_still(GEOM, CRYSTAL, seed=2, anomalies={name: p}, **{**BASE, **kw})
    return clean, dirty, p


def _excess_profile(clean, dirty):
    d_map = GEOM.d_spacing_map()
    diff = dirty.image.astype(float) - clean.image
    return d_map, diff


def test_anomaly_classes_order_is_the_seed_order():
    assert ANOMALY_CLASSES == (
        "background_ring", "diffuse_scattering", "ice_ring", "loop_scattering",
        "non_uniform_detector", "strong_background", "artifact",
    )
    assert label_vector(["ice_ring", "artifact"]).tolist() == [0, 0, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="unknown anomaly"):
        label_vector(["ice"])


@pytest.mark.parametrize("name", ANOMALY_CLASSES)
def test_label_is_set_exactly_for_the_injected_class(name):
    clean, dirty, _ = _pair(name)
    assert clean.anomaly_labels.tolist() == [0] * 7
    assert dirty.anomaly_labels.tolist() == label_vector([name]).tolist()
    assert not np.array_equal(clean.image, dirty.image)


def test_background_ring_sits_at_its_d_spacing():
    clean, dirty, p = _pair("background_ring", {"photons": 20.0, "d": 3.4, "sigma_s": 0.03})
    d_map, diff = _excess_profile(clean, dirty)
    assert np.all(diff >= -1e-3)
    peak_d = d_map.ravel()[np.argmax(diff)]
    assert peak_d == pytest.approx(3.4, abs=0.08)


def test_ice_rings_at_hexagonal_ice_spacings():
    p = {"photons": 50.0, "sigma_s": 0.002, "spotty": False, "n_grains": 0, "seed": 0}
    clean, dirty, _ = _pair("ice_ring", p)
    d_map, diff = _excess_profile(clean, dirty)
    hot = d_map[diff > 0.3 * diff.max()]
    # every strongly affected pixel is near one of the ice lines
    nearest = np.min(np.abs(hot[:, None] - ICE_RINGS[None, :, 0]), axis=1)
    assert np.all(nearest < 0.05)
    assert np.any(np.abs(hot - 3.895) < 0.02) and np.any(np.abs(hot - 3.669) < 0.02)


def test_spotty_ice_is_textured_along_the_ring():
    base = {"photons": 50.0, "sigma_s": 0.002, "n_grains": 60, "seed": 3}
    _, smooth, _ = _pair("ice_ring", {**base, "spotty": False})
    clean, spotty, _ = _pair("ice_ring", {**base, "spotty": True})
    d_map = GEOM.d_spacing_map()
    on_ring = np.abs(d_map - 3.895) < 0.01
    def cv(st):
        excess = (st.image - clean.image)[on_ring]
        return np.std(excess) / np.mean(excess)

    assert cv(spotty) > 2 * cv(smooth)


def test_loop_scattering_adds_an_arc_and_a_streak():
    p = {"photons": 30.0, "d": 5.0, "sigma_s": 0.015, "arc_center_deg": 0.0, "arc_concentration": 4.0,
         "streak_photons": 40.0, "streak_angle_deg": 90.0, "streak_width_deg": 0.3}
    clean, dirty, _ = _pair("loop_scattering", p)
    d_map, diff = _excess_profile(clean, dirty)
    az = np.degrees(GEOM.azimuth_map())
    ring = np.abs(d_map - 5.0) < 0.2
    assert diff[ring & (np.abs(az) < 30)].mean() > 5 * diff[ring & (np.abs(np.abs(az) - 180) < 30)].mean() - 1e-9
    streak = (np.abs(np.abs(az) - 90) < 2) & (d_map > 8)
    off = (np.abs(az) < 45) & (d_map > 8)
    assert diff[streak].mean() > 5 * diff[off].mean()


def test_diffuse_scattering_adds_halos_around_spots():
    p = {"halo_fraction": 1.0, "halo_scale": 5.0, "cloud_photons": 0.0, "seed": 0}
    clean, dirty, _ = _pair("diffuse_scattering", p)
    diff = dirty.image.astype(float) - clean.image
    s = clean.spots
    strong = s["photons"] > np.percentile(s["photons"], 90)
    yy, xx = np.mgrid[0:192, 0:192] + 0.5
    near = np.zeros((192, 192), bool)
    for f, sl in zip(s["fast"][strong], s["slow"][strong]):
        near |= np.hypot(xx - f, yy - sl) < 6
    assert diff[near].mean() > 3 * diff[~near].mean()
    # halos are diffuse: they do not enter the spot mask of the sharp spots
    assert dirty.spot_mask.sum() <= clean.spot_mask.sum()


def test_non_uniform_detector_scales_whole_modules():
    det = get_detector("pilatus6m")
    geom = det.geometry(150.0, 1.0, shape=(200, 195))
    kw = dict(noise=False, beamstop=False, style="flat", flat_photons=10.0, intensity_scale=0.0)
    clean = simulate_still(geom, CRYSTAL, detector=det, **kw)
    dirty = simulate_still(geom, CRYSTAL, detector=det, anomalies={"non_uniform_detector": {"gain_sigma": 0.2, "seed": 1}},
                           **kw)
    ok = clean.image > 0
    ratio = dirty.image[ok] / clean.image[ok]
    gains = np.array(dirty.params["module_gains"])
    assert len(gains) == 60 and np.std(gains) > 0.1
    assert np.all(np.isin(np.round(ratio, 4), np.round(gains.astype(np.float32), 4)))


def test_strong_background_lowers_spot_snr():
    clean, dirty, p = _pair("strong_background", {"factor": 10.0, "signal_factor": 0.3})
    assert np.median(dirty.image) > 5 * np.median(clean.image)
    assert np.median(dirty.spots["snr"]) < 0.5 * np.median(clean.spots["snr"])
    assert dirty.spots["in_mask"].sum() < clean.spots["in_mask"].sum()


def test_artifacts_change_only_the_artifact_mask():
    clean, dirty, p = _pair("artifact", {"kinds": ["stripes", "hot_cluster", "bloom", "dead_module"], "seed": 4})
    changed = dirty.image != clean.image
    assert dirty.artifact_mask.any()
    assert not np.any(changed & ~dirty.artifact_mask)
    assert changed.sum() > 0.5 * dirty.artifact_mask.sum()


def test_random_stills_labels_match_what_was_injected():
    seen = np.zeros(7, int)
    for seed in range(40):
        st = random_still(seed, detector="adsc_q4", shape=(64, 64), d_min=4.0)
        shown = [a for a, v in st.params["anomaly_visible"].items() if v]
        assert set(shown) <= set(st.params["anomalies"])
        assert st.anomaly_labels.tolist() == label_vector(shown).tolist()
        style = st.params["params"]["style"]
        if style != "realistic":  # flat and binary backgrounds never carry rings or clouds
            assert not set(st.anomalies) & {"background_ring", "ice_ring", "loop_scattering", "diffuse_scattering"}
        if style == "binary":
            assert set(np.unique(st.image)) <= {0.0, 1.0} and not st.anomalies
            assert np.array_equal(st.image.astype(bool), st.spot_mask)
        seen += st.anomaly_labels
    assert np.all(seen > 0), dict(zip(ANOMALY_CLASSES, seen))


def test_explicit_anomaly_list_is_honoured():
    st = random_still(5, shape=(64, 64), anomalies=["ice_ring", "artifact"], style="realistic", d_min=4.0)
    assert st.anomalies == ["ice_ring", "artifact"]
    st = random_still(5, shape=(64, 64), anomalies="none", d_min=4.0)
    assert st.anomalies == []


def test_rings_beyond_the_detector_edge_are_not_labelled():
    ice = {"photons": 50.0, "sigma_s": 0.002, "spotty": False, "n_grains": 0, "seed": 0}
    far = DetectorGeometry((128, 128), 0.1, 600.0, (64, 64), 1.0)  # sees d > 9 Å only
    near = DetectorGeometry((128, 128), 0.3, 40.0, (64, 64), 1.0)
    kw = dict(noise=False, d_min=4.0, anomalies={"ice_ring": ice})
    assert simulate_still(far, CRYSTAL, **kw).anomalies == []
    assert simulate_still(far, CRYSTAL, **kw).params["anomaly_visible"] == {"ice_ring": False}
    assert simulate_still(near, CRYSTAL, **kw).anomalies == ["ice_ring"]
    binary = simulate_still(near, CRYSTAL, style="binary", **kw)
    assert binary.anomalies == []
