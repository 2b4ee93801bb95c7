"""TIFF/.npy plain images, numbered series, and what can_read refuses."""

import bz2
import gzip
import os

import numpy as np
import pytest

from napari_xrd.core.io import ImageReadError, can_read, find_series, open_image, open_images
from napari_xrd.core.masks import DEAD, GAP

from test_io_cbf import small_frame, write_cbf
from test_io_smv import ccd_frame, write_smv


# ------------------------------------------------------------------ plain
@pytest.mark.parametrize("shape", [(30, 40), (3, 30, 40)])
def test_tiff_and_npy_are_plain_images(tmp_path, shape):
    import tifffile

    data = np.random.default_rng(0).integers(0, 1000, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack")
    np.save(tmp_path / "a.npy", data)
    for name, fmt in (("a.tif", "tiff"), ("a.npy", "npy")):
        assert can_read(tmp_path / name)
        image = open_image(tmp_path / name)
        assert image.format == fmt and image.geometry is None
        assert image.data.shape == (1,) * (3 - len(shape)) + shape
        np.testing.assert_array_equal(np.asarray(image.data).reshape(shape), data)
    assert isinstance(open_image(tmp_path / "a.npy").data, np.memmap)


def test_float_image_with_nans_is_masked_dead(tmp_path):
    data = np.ones((20, 30), np.float32)
    data[2, 3] = np.nan
    data[5, :] = -1
    np.save(tmp_path / "f.npy", data)
    image = open_image(tmp_path / "f.npy")
    assert image.pixel_mask[2, 3] == DEAD and np.all(image.pixel_mask[5] == GAP)
    assert image.metadata["nan_pixels"] == 1
    assert "NaN" in image.metadata["warnings"][0]


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.ones((10, 10), complex), "wrong dtype complex128"),
        (np.ones((10, 10), bool), "wrong dtype bool"),
        (np.ones((2, 3, 10, 10), np.float32), r"wrong shape \(2, 3, 10, 10\)"),
        (np.ones(10, np.int32), r"wrong shape \(10,\)"),
        (np.zeros((0, 10), np.int32), "empty image"),
    ],
    ids=["complex", "bool", "4d", "1d", "empty"],
)
def test_npy_with_wrong_dtype_or_shape(tmp_path, array, problem):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ImageReadError, match=f"bad.npy: {problem}"):
        open_image(tmp_path / "bad.npy")


def test_object_npy_and_rgb_tiff_are_refused(tmp_path):
    import tifffile

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="obj.npy: not a numeric .npy array"):
        open_image(tmp_path / "obj.npy")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((20, 30, 3), np.uint8), photometric="rgb")
    with pytest.raises(ImageReadError, match="rgb.tif: colour image"):
        open_image(tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, 20, 30), np.uint8), photometric="rgb",
                     planarconfig="separate")
    with pytest.raises(ImageReadError, match="planar.tif: colour image"):
        open_image(tmp_path / "planar.tif")


# ------------------------------------------------------------------ series
def _cbf_series(tmp_path, n=4, first=1):
    frames = [small_frame(seed=i) for i in range(n)]
    paths = [write_cbf(tmp_path / f"lyso_1_{first + i:05d}.cbf", f) for i, f in enumerate(frames)]
    return paths, np.stack(frames)


def test_numbered_cbf_series_is_one_lazy_stack(tmp_path, monkeypatch):
    import dask.array as da

    from napari_xrd.core.io import cbf

    paths, frames = _cbf_series(tmp_path)
    (tmp_path / "other_00001.cbf").write_bytes(paths[0].read_bytes())  # another series beside it
    assert find_series(paths[2]) == [str(p) for p in paths]
    reads = []
    original = cbf.read_cbf_frame
    monkeypatch.setattr(cbf, "read_cbf_frame", lambda p: reads.append(p) or original(p))
    image = open_image(paths[2], series=True)
    assert isinstance(image.data, da.Array) and image.data.chunks[0] == (1, 1, 1, 1)
    assert image.path == str(paths[0]) and image.geometry.beam_center == (21.5, 17.25)
    assert reads == []  # nothing but the first file read so far
    np.testing.assert_array_equal(image.frame(2), frames[2])
    assert reads == [str(paths[2])]
    np.testing.assert_array_equal(np.asarray(image.data), frames)
    assert image.metadata["series"]["n_files"] == 4
    assert image.metadata["series"]["template"].endswith("lyso_1_#####.cbf")
    # the single file alone when series is not asked for
    assert open_image(paths[2]).n_frames == 1


def test_series_from_directory_glob_and_list(tmp_path):
    paths, frames = _cbf_series(tmp_path, n=3, first=7)
    for source in (tmp_path, str(tmp_path / "lyso_1_*.cbf"), paths[::-1][::-1]):
        assert can_read(source)
        np.testing.assert_array_equal(np.asarray(open_image(source).data), frames)
    np.testing.assert_array_equal(np.asarray(open_images(paths).data), frames)


def test_compressed_smv_series_and_gaps_in_numbering(tmp_path):
    frames = [ccd_frame(seed=i) for i in range(3)]
    for number, f in zip((1, 2, 4), frames):
        raw = write_smv(tmp_path / "tmp.img", f).read_bytes()
        (tmp_path / f"q4_{number:03d}.img.bz2").write_bytes(bz2.compress(raw))
    os.remove(tmp_path / "tmp.img")
    image = open_image(tmp_path / "q4_002.img.bz2", series=True)
    np.testing.assert_array_equal(np.asarray(image.data), np.stack(frames))
    assert image.geometry.beam_center == pytest.approx((31.0, 20.5))
    assert "not contiguous" in image.metadata["warnings"][0]


def test_series_member_of_another_shape_is_named_when_read(tmp_path):
    paths, _ = _cbf_series(tmp_path, n=3)
    write_cbf(paths[1], small_frame(shape=(20, 50)))
    image = open_image(paths[0], series=True)
    np.testing.assert_array_equal(image.frame(2), small_frame(seed=2))
    with pytest.raises(ImageReadError, match=r"lyso_1_00002\.cbf: frame shape \(20, 50\) differs"):
        image.frame(1)


def test_directory_with_two_series_or_none(tmp_path):
    _cbf_series(tmp_path, n=2)
    write_cbf(tmp_path / "other_0001.cbf", small_frame())
    with pytest.raises(ImageReadError, match="holds 2 image series"):
        open_image(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not can_read(empty)
    with pytest.raises(ImageReadError, match="empty: no CBF or SMV image files found"):
        open_image(empty)


# ------------------------------------------------------------------ junk
def _junk(tmp_path, kind):
    rng = np.random.default_rng(1)
    p = tmp_path / f"junk_{kind}"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(rng.bytes(5000))
    elif kind == "text":
        p.write_text("hello, this is not an image\n" * 20)
    elif kind == "gz_text":
        p = tmp_path / "notes.txt.gz"
        p.write_bytes(gzip.compress(b"just text\n" * 100))
    elif kind == "broken_bz2":
        p = tmp_path / "broken.bin.bz2"
        p.write_bytes(b"BZh9" + rng.bytes(200))
    elif kind == "missing":
        p = tmp_path / "does_not_exist.cbf"
    elif kind == "dir_of_text":
        p.mkdir()
        (p / "readme.txt").write_text("x")
    elif kind == "broken_symlink":
        p.symlink_to(tmp_path / "nowhere.cbf")
    elif kind == "png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(100))
    elif kind == "hdf5_magic_only":
        p.write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(100))
    return p


JUNK = ["empty", "random", "text", "gz_text", "broken_bz2", "missing", "dir_of_text",
        "broken_symlink", "png", "hdf5_magic_only"]


@pytest.mark.parametrize("kind", JUNK)
def test_can_read_refuses_junk_without_raising(tmp_path, kind):
    path = _junk(tmp_path, kind)
    assert can_read(path) is False
    assert can_read(str(path)) is False
    assert can_read([path]) is False


@pytest.mark.parametrize("value", [None, 3, "", [], "\x00bad", b"\x00"], ids=repr)
def test_can_read_odd_arguments(value):
    assert can_read(value) is False


@pytest.mark.parametrize("kind", ["random", "text", "png", "hdf5_magic_only"])
def test_open_image_on_unclaimed_file_is_a_clear_error(tmp_path, kind):
    path = _junk(tmp_path, kind)
    with pytest.raises(ImageReadError, match=f"{path.name}: unrecognised file format"):
        open_image(path)


@pytest.mark.parametrize("name, problem", [
    ("empty.cbf", "empty file"),
    ("empty.img", "empty file"),
    ("random.cbf", "no binary image section"),
    ("random.img", "not an SMV file"),
])
def test_files_claimed_by_name_give_clear_errors(tmp_path, name, problem):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else np.random.default_rng(0).bytes(3000))
    assert can_read(path)  # claimed, so napari shows the reason instead of "no reader"
    with pytest.raises(ImageReadError, match=f"{name}: {problem}"):
        open_image(path)
