"""SMV / ADSC .img reading, including the real ADSC Quantum-4 frame."""

import bz2
import gzip
from pathlib import Path

import numpy as np
import pytest

from napari_xrd.core.io import ImageReadError, can_read, open_image
from napari_xrd.core.io.smv import seam_mask
from napari_xrd.core.masks import GAP

REAL_FRAME = Path(__file__).resolve().parents[1] / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2"


def write_smv(path, data, *, byte_order="big_endian", header_bytes=512, **keys):
    """Write an ADSC-style SMV file; ``keys`` override/add header values."""
    data = np.asarray(data)
    kind = {"u2": "unsigned_short", "u4": "unsigned_int", "i4": "signed_long", "f4": "float"}[
        data.dtype.kind + str(data.dtype.itemsize)
    ]
    header = {
        "HEADER_BYTES": f"{header_bytes:5d}",
        "DIM": "2",
        "BYTE_ORDER": byte_order,
        "TYPE": kind,
        "SIZE1": str(data.shape[1]),
        "SIZE2": str(data.shape[0]),
        "PIXEL_SIZE": "0.1",
        "DISTANCE": "150.0",
        "WAVELENGTH": "0.9792",
        "BEAM_CENTER_X": "2.05",  # along slow, mm
        "BEAM_CENTER_Y": "3.10",  # along fast, mm
        "OSC_START": "5.0",
        "OSC_RANGE": "0.5",
        "TIME": "2.0",
        "DETECTOR_SN": "916",
        "CCD_IMAGE_SATURATION": "65535",
    }
    header.update({k: str(v) for k, v in keys.items() if v is not None})
    for k in [k for k, v in keys.items() if v is None]:
        header.pop(k, None)
    text = "{\n" + "".join(f"{k}={v};\n" for k, v in header.items()) + "}\n"
    text = text.encode("ascii").ljust(header_bytes, b" ")
    order = ">" if byte_order == "big_endian" else "<"
    Path(path).write_bytes(text + data.astype(data.dtype.newbyteorder(order)).tobytes())
    return Path(path)


def ccd_frame(shape=(40, 60), seed=0):
    rng = np.random.default_rng(seed)
    return (40 + rng.poisson(10, shape)).astype(np.uint16)


@pytest.mark.parametrize("byte_order", ["big_endian", "little_endian"])
def test_smv_round_trip_and_adsc_beam_center(tmp_path, byte_order):
    data = ccd_frame()
    data[3, 4] = 65535
    path = write_smv(tmp_path / "x_001.img", data, byte_order=byte_order)
    assert can_read(path)
    image = open_image(path)
    assert image.format == "smv"
    assert image.dtype == np.uint16 and image.dtype.isnative
    np.testing.assert_array_equal(image.frame(0), data)
    g = image.geometry
    # ADSC: BEAM_CENTER_X runs along slow, BEAM_CENTER_Y along fast
    assert g.beam_center == pytest.approx((31.0, 20.5))
    assert (g.pixel_size, g.distance, g.wavelength) == pytest.approx((0.1, 150.0, 0.9792))
    md = image.metadata
    assert md["oscillation_start_deg"] == 5.0 and md["oscillation_width_deg"] == 0.5
    assert md["exposure_time_s"] == 2.0 and md["serial"] == "916"
    # saturated pixels are reported, not masked
    assert md["saturated_pixels"] == 1
    assert image.pixel_mask[3, 4] == 0


def test_uncompressed_native_smv_is_memory_mapped(tmp_path):
    native = "little_endian" if np.little_endian else "big_endian"
    image = open_image(write_smv(tmp_path / "m.img", ccd_frame(), byte_order=native))
    assert isinstance(image.data.base, np.memmap) or isinstance(image.data, np.memmap)


@pytest.mark.parametrize("suffix", ["gz", "bz2"])
def test_compressed_smv(tmp_path, suffix):
    data = ccd_frame(seed=2)
    raw = write_smv(tmp_path / "a.img", data).read_bytes()
    packed = tmp_path / f"a.img.{suffix}"
    packed.write_bytes(gzip.compress(raw) if suffix == "gz" else bz2.compress(raw))
    assert can_read(packed)
    np.testing.assert_array_equal(open_image(packed).frame(0), data)


def test_seam_mask_marks_zero_lines_only():
    data = ccd_frame((50, 50)).astype(np.uint16)
    data[20:22, :] = 0
    data[:, 33] = 0
    data[5, 5] = 0  # a single zero pixel is not a seam
    data[40, :45] = 0  # 90 % of a row
    mask = seam_mask(data)
    assert np.all(mask[20:22] == GAP) and np.all(mask[:, 33] == GAP) and np.all(mask[40] == GAP)
    assert mask[5, 5] == 0 and mask[10, 10] == 0
    assert np.count_nonzero(mask) == 3 * 50 + 50 - 3
    # a mostly empty photon-counting-like image: no seams can be told apart
    sparse = np.zeros((50, 50), np.uint16)
    sparse[::7, ::5] = 3
    assert not seam_mask(sparse).any()


def test_weak_edge_lines_are_marked_cold():
    from napari_xrd.core.io.smv import weak_edge_mask
    from napari_xrd.core.masks import COLD

    rng = np.random.default_rng(0)
    data = (40 + rng.poisson(30.0, (64, 80))).astype(np.uint16)  # pedestal 40 + signal
    assert not weak_edge_mask(data).any()  # uniform response: nothing masked
    data[0, :] = 40 + rng.poisson(8.0, 80)  # top row at about a quarter of the signal
    data[:, -1] = 40 + rng.poisson(20.0, 64)  # right column at two thirds
    data[-1, :] = 40 + rng.poisson(28.0, 80)  # bottom row nearly normal: kept
    mask = weak_edge_mask(data)
    assert np.all(mask[0] == COLD) and np.all(mask[:, -1] == COLD)
    assert not mask[1:, :-1].any()


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_smv_names_expected_and_actual_bytes(tmp_path, compressed):
    raw = write_smv(tmp_path / "full.img", ccd_frame()).read_bytes()
    cut = tmp_path / ("cut.img.gz" if compressed else "cut.img")
    short = raw[:-100]
    cut.write_bytes(gzip.compress(short) if compressed else short)
    expected = 512 + 40 * 60 * 2
    with pytest.raises(ImageReadError, match=rf"cut\.img.*truncated data: expected {expected} bytes.*got {expected - 100}"):
        open_image(cut)


def test_smv_missing_keys(tmp_path):
    path = write_smv(tmp_path / "nosize.img", ccd_frame(), SIZE1=None)
    with pytest.raises(ImageReadError, match="nosize.img: missing header key SIZE1"):
        open_image(path)
    path = write_smv(tmp_path / "nogeom.img", ccd_frame(), DISTANCE=None, WAVELENGTH=None)
    image = open_image(path)
    assert image.geometry is None
    assert "DISTANCE, WAVELENGTH" in image.metadata["warnings"][0]
    with pytest.raises(ImageReadError, match="nogeom.img: missing or unusable header key.*DISTANCE, WAVELENGTH"):
        open_image(path, require_geometry=True)
    path = write_smv(tmp_path / "type.img", ccd_frame(), TYPE="complex_double")
    with pytest.raises(ImageReadError, match="type.img: unsupported pixel TYPE"):
        open_image(path)


@pytest.mark.realdata
def test_real_adsc_q4_frame():
    image = open_image(REAL_FRAME)
    assert image.format == "smv"
    assert image.data.shape == (1, 2304, 2304) and image.dtype == np.uint16
    g = image.geometry
    assert g.name == "adsc_q4"
    # the must-have: header BEAM_CENTER_X=99.30 (slow), _Y=94.70 (fast) mm
    assert g.beam_center == pytest.approx((1160.5, 1216.9), abs=0.05)
    assert g.beam_center_mm == pytest.approx((94.70, 99.30))
    assert g.distance == 250.0 and g.wavelength == 1.0 and g.pixel_size == pytest.approx(0.0816)
    frame = image.frame(0)
    seams = (image.pixel_mask & GAP) > 0
    # the CCD's weak outermost lines are COLD, not gaps
    assert image.metadata["weak_edge_pixels"] > 0 and ((image.pixel_mask[0] & 4) > 0).all()
    # the module seams: full rows and columns, and nothing else
    rows = np.nonzero(seams.all(axis=1))[0]
    cols = np.nonzero(seams.all(axis=0))[0]
    assert len(rows) and len(cols)
    assert 1100 < rows.mean() < 1200 and 1100 < cols.mean() < 1200
    assert np.all(frame[seams] == 0)
    assert np.count_nonzero(seams) == 2304 * (len(rows) + len(cols)) - len(rows) * len(cols)
    # the rest of the detector mostly holds signal
    assert np.count_nonzero(frame[~seams] == 0) < 0.001 * frame.size
    assert image.metadata["saturation_value"] == 65535
    assert image.metadata["saturated_pixels"] == int(np.count_nonzero(frame >= 65535))
