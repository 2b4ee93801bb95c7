"""EIGER NeXus: write_nexus round trip, external links, bslz4, laziness, bad files."""

import threading

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io import ImageReadError, can_read, open_image
from napari_xrd.core.io import nexus
from napari_xrd.core.io.nexus import write_nexus
from napari_xrd.core.masks import DEAD, GAP

SHAPE = (36, 44)  # (n_slow, n_fast)
GEOMETRY = DetectorGeometry(SHAPE, 0.075, 180.0, (20.5, 15.25), 0.9763)


def frames_and_mask(n=5, dtype=np.uint32, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.poisson(3.0, (n,) + SHAPE).astype(dtype)
    invalid = np.iinfo(dtype).max
    pixel_mask = np.zeros(SHAPE, np.uint32)
    pixel_mask[:, 22] = GAP
    pixel_mask[4, 4] = DEAD | 8
    frames[:, :, 22] = invalid
    frames[:, 4, 4] = invalid
    frames[:, 10, 30] = invalid  # invalid value on a pixel the mask does not flag
    return frames, pixel_mask


def test_nexus_round_trip_external_links_bslz4_mask(tmp_path):
    import h5py

    frames, pixel_mask = frames_and_mask()
    files = write_nexus(tmp_path / "run_master.h5", frames, GEOMETRY, pixel_mask,
                        frames_per_file=2, oscillation=(10.0, 0.1), saturation_value=90000)
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "run_master.h5", "run_data_000001.h5", "run_data_000002.h5", "run_data_000003.h5"]
    with h5py.File(files[0], "r") as f:
        link = f["entry/data"].get("data_000002", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert (link.filename, link.path) == ("run_data_000002.h5", "/entry/data/data")
        assert f["entry/instrument/detector/x_pixel_size"].attrs["units"] == "m"
    with h5py.File(files[1], "r") as f:
        ds = f["entry/data/data"]
        assert ds.chunks == (1,) + SHAPE
        assert "32008" in ds._filters  # bitshuffle
    assert can_read(files[0])
    image = open_image(files[0])
    assert image.format == "nexus"
    assert image.data.shape == (5,) + SHAPE and image.dtype == np.uint32
    assert image.data.chunks[0] == (1,) * 5
    np.testing.assert_array_equal(np.asarray(image.data), frames)
    assert image.geometry == GEOMETRY
    pm = image.pixel_mask
    assert np.all(pm[:, 22] == GAP) and pm[4, 4] == DEAD | 8  # bits kept as stored
    assert pm[10, 30] == DEAD  # 2**32 - 1 in the data, flagged
    assert np.count_nonzero(pm) == SHAPE[0] + 2
    md = image.metadata
    assert md["oscillation_start_deg"] == 10.0 and md["oscillation_width_deg"] == pytest.approx(0.1)
    assert md["saturation_value"] == 90000 and md["bit_depth_image"] == 32
    assert md["data_files"] == ["run_data_000001.h5", "run_data_000002.h5", "run_data_000003.h5"]


def test_nexus_is_lazy_reads_only_the_frames_asked_for(tmp_path, monkeypatch):
    frames, pixel_mask = frames_and_mask(n=8)
    path = write_nexus(tmp_path / "lazy_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=3)[0]
    reads = []
    original = nexus._NexusFrames._read

    def counting(self, i, rest):
        out = original(self, i, rest)
        reads.append(i)
        return out

    monkeypatch.setattr(nexus._NexusFrames, "_read", counting)
    image = open_image(path)
    assert reads == [0]  # frame 0, to flag 2**bits - 1 pixels
    np.testing.assert_array_equal(image.frame(0), frames[0])  # handed over, not read again
    np.testing.assert_array_equal(image.frame(5), frames[5])
    np.testing.assert_array_equal(image.frame(7), frames[7])
    assert reads == [0, 0, 5, 7]  # the second 0 is the hand-over, not a file read
    image.frame(0)
    assert reads == [0, 0, 5, 7, 0]


def test_nexus_keeps_few_files_open(tmp_path, monkeypatch):
    frames, pixel_mask = frames_and_mask(n=7)
    path = write_nexus(tmp_path / "many_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=1)[0]
    monkeypatch.setattr(nexus._NexusFrames, "max_open", 3)
    image = open_image(path)
    np.testing.assert_array_equal(np.asarray(image.data[::-1]), frames[::-1])
    src = next(v for v in image.data.dask.values() if isinstance(v, nexus._NexusFrames))
    assert len(src._files) == 3


def test_nexus_chunks_computed_in_threads(tmp_path):
    import dask

    frames, pixel_mask = frames_and_mask(n=12, dtype=np.uint16, seed=3)
    path = write_nexus(tmp_path / "t_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=5)[0]
    image = open_image(path)
    with dask.config.set(scheduler="threads", num_workers=6):
        out = image.data.sum(axis=(1, 2)).compute()
    np.testing.assert_array_equal(out, frames.sum(axis=(1, 2), dtype=np.uint64))
    # many threads asking for frames at once
    results = {}

    def grab(i):
        results[i] = image.frame(i)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(12):
        np.testing.assert_array_equal(results[i], frames[i])
    assert image.metadata["invalid_value"] == 65535


def test_dangling_external_link_names_the_missing_file(tmp_path):
    frames, pixel_mask = frames_and_mask()
    files = write_nexus(tmp_path / "d_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=2)
    (tmp_path / "d_data_000002.h5").unlink()
    assert can_read(files[0])  # claimed: it is an EIGER master ...
    with pytest.raises(ImageReadError, match=r"d_master\.h5: dangling external link .*d_data_000002\.h5"):
        open_image(files[0])  # ... that cannot be read


def test_hdf5_without_an_image_dataset(tmp_path):
    import h5py

    path = tmp_path / "text_master.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data_000001"] = np.array([b"not", b"pixels"])
    with pytest.raises(ImageReadError, match="text_master.h5: .*not an image dataset"):
        open_image(path)
    other = tmp_path / "table.h5"
    with h5py.File(other, "w") as f:
        f["results/table"] = np.arange(10)
    assert not can_read(other)
    with pytest.raises(ImageReadError, match="table.h5: unrecognised file format"):
        open_image(other)


def test_nexus_units_and_missing_geometry(tmp_path):
    import h5py

    frames, _ = frames_and_mask(n=2)
    path = write_nexus(tmp_path / "u_master.h5", frames, GEOMETRY, frames_per_file=10)[0]
    with h5py.File(path, "r+") as f:
        det = f["entry/instrument/detector"]
        del det["detector_distance"]
        det["detector_distance"] = 180.0
        det["detector_distance"].attrs["units"] = "mm"
        del det["x_pixel_size"]
        det["x_pixel_size"] = 75.0
        det["x_pixel_size"].attrs["units"] = "um"
        wl = f["entry/instrument/beam/incident_wavelength"]
        wl.attrs["units"] = "nm"
        wl[()] = 0.09763
    assert open_image(path).geometry == GEOMETRY
    bare = write_nexus(tmp_path / "bare_master.h5", frames, None)[0]
    image = open_image(bare)
    assert image.geometry is None and image.pixel_mask is not None
    assert "x_pixel_size" in image.metadata["warnings"][0]
    with pytest.raises(ImageReadError, match=r"bare_master\.h5: missing header key.*incident_wavelength"):
        open_image(bare, require_geometry=True)


def test_write_nexus_checks_its_input(tmp_path):
    frames, _ = frames_and_mask(n=2)
    with pytest.raises(ValueError, match="compression"):
        write_nexus(tmp_path / "a.h5", frames, GEOMETRY, compression="zip")
    with pytest.raises(ValueError, match="pixel_mask shape"):
        write_nexus(tmp_path / "b.h5", frames, GEOMETRY, np.zeros((3, 3), np.uint32))
    with pytest.raises(ValueError, match="frames must be"):
        write_nexus(tmp_path / "c.h5", np.zeros(5), GEOMETRY)


def test_eiger_data_file_opens_on_its_own(tmp_path):
    frames, pixel_mask = frames_and_mask(n=4)
    files = write_nexus(tmp_path / "z_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=3)
    assert can_read(files[2])
    image = open_image(files[2])  # frames 4.. only, no geometry in a data file
    assert image.n_frames == 1 and image.geometry is None
    np.testing.assert_array_equal(image.frame(0), frames[3])
    assert "no detector geometry" in image.metadata["warnings"][0]


def test_virtual_dataset_master_and_its_missing_sources(tmp_path):
    import h5py

    frames, pixel_mask = frames_and_mask(n=4)
    files = write_nexus(tmp_path / "v_master.h5", frames, GEOMETRY, pixel_mask, frames_per_file=2)
    # a Diamond-style master: /entry/data/data is a VDS over the data files
    layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
    for k, name in enumerate(["v_data_000001.h5", "v_data_000002.h5"]):
        layout[2 * k : 2 * k + 2] = h5py.VirtualSource(name, "/entry/data/data", shape=(2,) + SHAPE)
    with h5py.File(files[0], "r+") as f:
        for name in list(f["entry/data"]):
            del f["entry/data"][name]
        f["entry/data"].create_virtual_dataset("data", layout)
    image = open_image(files[0])
    np.testing.assert_array_equal(np.asarray(image.data), frames)
    (tmp_path / "v_data_000002.h5").unlink()
    with pytest.raises(ImageReadError, match=r"v_master\.h5: dangling virtual dataset .*v_data_000002\.h5"):
        open_image(files[0])


def test_truncated_master_is_claimed_and_named(tmp_path):
    frames, pixel_mask = frames_and_mask(n=2)
    master = write_nexus(tmp_path / "tr_master.h5", frames, GEOMETRY, pixel_mask)[0]
    raw = open(master, "rb").read()
    cut = tmp_path / "cut_master.h5"
    cut.write_bytes(raw[: len(raw) // 3])
    assert can_read(cut)
    with pytest.raises(ImageReadError, match=r"cut_master\.h5: cannot read HDF5 file"):
        open_image(cut)
    anonymous = tmp_path / "cut_no_suffix"
    anonymous.write_bytes(raw[: len(raw) // 3])
    assert not can_read(anonymous)
