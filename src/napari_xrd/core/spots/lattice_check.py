"""Do spots lie on this frame's crystal lattice?  Bragg spots do; ice grains only by chance.

The spots away from every ice line are (nearly all) the crystal's: indexed
without a known cell (:func:`~napari_xrd.core.beam_center.indexing.index_reciprocal_lattice`,
the stills model: each spot's scattering vector on the Ewald sphere), they
give a reciprocal lattice.  A spot near an ice line that falls on it is very
likely a Bragg spot.  How likely is measured on the frame itself: the
fraction of the reference spots that the lattice indexes, against the
fraction indexed by chance, from the same spots turned about the beam by
random angles (same resolutions, random places).  On a frame that does not
index (too few spots, rotation frames whose spots are far from the still's
Ewald sphere, a beam centre far off) the two fractions are alike and the
test says nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["lattice_membership", "frame_lattice", "FrameLattice", "turned_about_beam"]


class FrameLattice(NamedTuple):
    """A still's reciprocal lattice, indexed from its spots.

    Attributes
    ----------
    basis : (3, 3) ndarray
        Real-space vectors ``a, b, c`` (rows, Å).
    phase : (3,) ndarray
        Offsets of the lattice coordinates ``basis @ r`` from integers (a
        beam centre a little off translates the lattice).
    """

    basis: np.ndarray
    phase: np.ndarray

    def coordinates(self, r) -> np.ndarray:
        """Lattice coordinates ``basis @ r - phase`` of scattering vectors ``r`` (n, 3): shape (3, n)."""
        return self.basis @ np.asarray(r, float).reshape(-1, 3).T - self.phase[:, None]

    def points(self, hkl) -> np.ndarray:
        """Reciprocal-lattice points (Å⁻¹, lab frame) of integer indices ``hkl`` (n, 3): shape (n, 3)."""
        return (np.linalg.solve(self.basis, (np.asarray(hkl, float).reshape(-1, 3) + self.phase).T)).T


def frame_lattice(
    positions,
    geometry,
    reference,
    *,
    tolerance: float = 0.2,
    min_reference: int = 20,
    max_reference: int = 600,
    rng=None,
):
    """The lattice of the ``reference`` spots of a still, or None where they give none.

    Parameters
    ----------
    positions : (n, 2) array_like
        Spot centroids ``(fast, slow)``, pixels (DIALS corner convention).
    geometry : DetectorGeometry
    reference : (n,) bool array_like
        The spots to index from.
    tolerance : float
        Indexing tolerance (lattice coordinates within this of integers).
    min_reference, max_reference : int
        Fewest reference spots to index from; at most this many of them (a
        random choice by ``rng``).
    rng : numpy.random.Generator, optional
        Default: seed 0 (reproducible).

    Returns
    -------
    FrameLattice or None
    """
    from napari_xrd.core.beam_center.indexing import _transform, index_reciprocal_lattice

    rng = np.random.default_rng(0) if rng is None else rng
    xy = np.asarray(positions, dtype=float).reshape(-1, 2)
    ref = np.asarray(reference, dtype=bool) & np.all(np.isfinite(xy), axis=1)
    if ref.sum() < min_reference:
        return None
    used = np.flatnonzero(ref)
    if len(used) > max_reference:
        used = np.sort(rng.choice(used, max_reference, replace=False))
    r = geometry.scattering_vectors(xy[used, 0], xy[used, 1])
    basis, _, _ = index_reciprocal_lattice(r, tolerance=tolerance)
    if basis is None:
        return None
    return FrameLattice(basis, np.angle(_transform(basis, r)) / (2 * np.pi))


def turned_about_beam(positions, beam_center, rng) -> np.ndarray:
    """``positions`` (n, 2) turned about the beam centre by random angles: same radius, random azimuth.

    The chance control of a lattice test: the same resolutions, rings and
    grains, no lattice.
    """
    xy = np.asarray(positions, float).reshape(-1, 2)
    bx, by = beam_center
    a = rng.uniform(0.0, 2.0 * np.pi, len(xy))
    dx, dy = xy[:, 0] - bx, xy[:, 1] - by
    return np.column_stack([bx + dx * np.cos(a) - dy * np.sin(a), by + dx * np.sin(a) + dy * np.cos(a)])


def lattice_membership(
    positions,
    geometry,
    reference,
    *,
    tolerance: float = 0.2,
    test_tolerance: float = 0.1,
    min_reference: int = 20,
    max_reference: int = 600,
    n_shuffles: int = 8,
    seed: int = 0,
):
    """Which spots the lattice of the ``reference`` spots indexes, and how often Bragg spots and chance do.

    Parameters
    ----------
    positions : (n, 2) array_like
        Spot centroids ``(fast, slow)``, pixels (DIALS corner convention).
    geometry : DetectorGeometry
    reference : (n,) bool array_like
        The spots to index from (those away from the ice lines).
    tolerance : float
        Indexing tolerance of the reference spots (lattice coordinates
        within this of integers).
    test_tolerance : float
        A spot lies on the lattice when its three lattice coordinates are
        within this of integers (tighter: fewer grains on it by chance).
    min_reference : int
        Fewest reference spots to index from.
    max_reference : int
        Index from at most this many of them (a random choice; indexing
        time grows with their number, its answer hardly does).
    n_shuffles : int
        Random turns of the reference spots about the beam for the chance
        rate.
    seed : int
        Seed of those turns (the result is reproducible).

    Returns
    -------
    indexed : (n,) bool ndarray or None
        None where the reference spots give no lattice.
    rate_bragg : float
        Fraction of the reference spots indexed.
    rate_chance : float
        Fraction of the turned reference spots indexed.
    """
    xy = np.asarray(positions, dtype=float).reshape(-1, 2)
    ref = np.asarray(reference, dtype=bool) & np.all(np.isfinite(xy), axis=1)
    rng = np.random.default_rng(seed)
    lattice = frame_lattice(xy, geometry, ref, tolerance=tolerance, min_reference=min_reference,
                            max_reference=max_reference, rng=rng)
    if lattice is None:
        return None, float("nan"), float("nan")

    def on_lattice(vectors):
        x = lattice.coordinates(vectors)
        return np.all(np.abs(x - np.round(x)) < test_tolerance, axis=0)

    indexed = on_lattice(geometry.scattering_vectors(xy[:, 0], xy[:, 1]))
    indexed[~np.all(np.isfinite(xy), axis=1)] = False
    # chance: the reference spots turned about the beam centre (same radius, so nearly the same resolution)
    hits = []
    for _ in range(n_shuffles):
        fx, fy = turned_about_beam(xy[ref], geometry.beam_center, rng).T
        hits.append(on_lattice(geometry.scattering_vectors(fx, fy)))
    return indexed, float(indexed[ref].mean()), float(np.mean(hits))
