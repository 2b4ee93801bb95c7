"""CBF reading: Pilatus header geometry, -1/-2 masks, truncation, compression."""

import bz2
import gzip

import numpy as np
import pytest

from napari_xrd.core.io import ImageReadError, can_read, open_image
from napari_xrd.core.masks import DEAD, GAP

PILATUS_HEADER = """# Detector: PILATUS 6M, S/N 60-0123
# 2021-Mar-04T10:11:12.345
# Pixel_size 172e-6 m x 172e-6 m
# Silicon sensor, thickness 0.000450 m
# Exposure_time 0.0970000 s
# Exposure_period 0.1000000 s
# Count_cutoff 1000 counts
# Threshold_setting: 6342 eV
# Wavelength 0.97950 A
# Detector_distance 0.31250 m
# Beam_xy (21.50, 17.25) pixels
# Start_angle 12.5000 deg.
# Angle_increment 0.2000 deg."""


def write_cbf(path, data, header_text=PILATUS_HEADER):
    """Write ``data`` as a miniCBF with a Pilatus header, via fabio."""
    from fabio.cbfimage import CbfImage

    header = {"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header_text}
    CbfImage(data=np.ascontiguousarray(data, dtype=np.int32), header=header).write(str(path))
    return path


def small_frame(seed=0, shape=(40, 50)):
    rng = np.random.default_rng(seed)
    data = rng.poisson(5.0, shape).astype(np.int32)
    data[:, 20] = -1  # a module gap column
    data[7, 3] = -2  # a bad pixel
    data[-10, -10] = 1500  # above Count_cutoff
    return data


def test_cbf_round_trip_values_geometry_mask_metadata(tmp_path):
    data = small_frame()
    path = write_cbf(tmp_path / "x_00001.cbf", data)
    assert can_read(path)
    image = open_image(path)
    assert image.format == "cbf"
    assert image.data.shape == (1, 40, 50)
    np.testing.assert_array_equal(image.frame(0), data)
    g = image.geometry
    assert g.shape == (40, 50)
    assert g.pixel_size == pytest.approx(0.172)
    assert g.distance == pytest.approx(312.5)
    assert g.wavelength == pytest.approx(0.9795)
    # Beam_xy is (fast, slow) and, as in dxtbx, Beam_xy * pixel size is the
    # beam centre in mm from the corner of the first pixel: no half-pixel shift.
    assert g.beam_center == pytest.approx((21.5, 17.25))
    assert g.beam_center_mm == pytest.approx((21.5 * 0.172, 17.25 * 0.172))
    pm = image.pixel_mask
    assert pm.dtype == np.uint32
    assert np.all(pm[:, 20] == GAP)
    assert pm[7, 3] == DEAD
    assert np.count_nonzero(pm) == 40 + 1
    md = image.metadata
    assert md["serial"] == "60-0123"
    assert md["detector"] == "PILATUS 6M"
    assert md["exposure_time_s"] == pytest.approx(0.097)
    assert md["oscillation_start_deg"] == pytest.approx(12.5)
    assert md["oscillation_width_deg"] == pytest.approx(0.2)
    assert md["saturation_value"] == 1000
    assert md["saturated_pixels"] == 1
    assert md["sensor_thickness_mm"] == pytest.approx(0.45)
    assert "warnings" not in md


def test_cbf_full_pilatus6m_gets_catalogue_gaps(tmp_path):
    from napari_xrd.core.detectors import DETECTORS

    det = DETECTORS["pilatus6m"]
    data = np.zeros(det.shape, dtype=np.int32)
    data[100, 100] = -2
    header = PILATUS_HEADER.replace("(21.50, 17.25)", "(1231.50, 1263.50)")
    image = open_image(write_cbf(tmp_path / "p6m.cbf", data, header))
    assert image.geometry.name == "pilatus6m"
    gaps = det.gap_mask() > 0
    np.testing.assert_array_equal((image.pixel_mask & GAP) > 0, gaps)
    assert image.pixel_mask[100, 100] & DEAD


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gz", "bz2"])
def test_compressed_cbf_reads_like_plain(tmp_path, compress):
    data = small_frame(1)
    plain = write_cbf(tmp_path / "a.cbf", data)
    packed = tmp_path / ("a.cbf." + ("gz" if compress is gzip.compress else "bz2"))
    packed.write_bytes(compress(plain.read_bytes()))
    assert can_read(packed)
    image = open_image(packed)
    np.testing.assert_array_equal(image.frame(0), data)
    assert image.geometry == open_image(plain).geometry


def test_cbf_without_geometry_opens_plain_or_raises_when_required(tmp_path):
    header = "\n".join(
        line for line in PILATUS_HEADER.splitlines() if not line.startswith(("# Wavelength", "# Beam_xy"))
    )
    path = write_cbf(tmp_path / "nogeom.cbf", small_frame(), header)
    image = open_image(path)
    assert image.geometry is None
    assert any("Wavelength" in w and "Beam_xy" in w for w in image.metadata["warnings"])
    with pytest.raises(ImageReadError, match=r"nogeom\.cbf.*Wavelength, Beam_xy"):
        open_image(path, require_geometry=True)


def test_truncated_cbf_names_expected_and_actual_bytes(tmp_path):
    path = write_cbf(tmp_path / "full.cbf", small_frame())
    raw = path.read_bytes()
    cut = tmp_path / "cut.cbf"
    cut.write_bytes(raw[: len(raw) - 1000])
    assert can_read(cut)
    with pytest.raises(ImageReadError, match=r"cut\.cbf: truncated data: expected \d+ bytes .* got \d+"):
        open_image(cut)
    header_only = tmp_path / "header_only.cbf"
    header_only.write_bytes(raw[:300])
    with pytest.raises(ImageReadError, match="header_only.cbf: no binary image section"):
        open_image(header_only)


def test_cbf_corrupt_gzip_is_a_clear_error(tmp_path):
    path = write_cbf(tmp_path / "a.cbf", small_frame())
    packed = gzip.compress(path.read_bytes())
    bad = tmp_path / "bad.cbf.gz"
    bad.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ImageReadError, match="bad.cbf.gz"):
        open_image(bad)


@pytest.mark.parametrize("with_gaps", [False, True])
def test_fast_marker_mask_equals_mask_from_values(with_gaps):
    from napari_xrd.core.io.cbf import _marker_mask
    from napari_xrd.core.masks import mask_from_values

    rng = np.random.default_rng(4)
    image = rng.integers(-4, 3, (100, 77)).astype(np.int32)  # 100 rows: blocks of 32 + a rest
    gaps = (rng.random(image.shape) < 0.1).astype(np.uint32) * GAP if with_gaps else None
    expected = mask_from_values(image) | (0 if gaps is None else gaps)
    np.testing.assert_array_equal(_marker_mask(image, gaps), expected)
