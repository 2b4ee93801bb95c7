"""Crystals for the simulator: unit cells, space groups, orientations, intensities.

A :class:`Crystal` is a unit cell, a space group (symmetry operations from
gemmi, imported lazily) and an orientation matrix ``U``.  Its reciprocal
lattice points are ``r = U @ B @ hkl`` (Å⁻¹, lab frame, no 2π), with ``B``
the Busing & Levy (1967) matrix whose columns are ``a*, b*, c*`` in a
Cartesian frame with ``a`` along x and ``b`` in the xy plane.

Intensities
-----------
Unless structure factors are given, intensities follow Wilson statistics:
``<I(d)> = epsilon * exp(-B / (2 d²))`` with ``epsilon`` the multiplicity
factor of the reflection's zone, and ``I / <I>`` drawn from the acentric
(exponential) or centric (χ² with one degree of freedom) distribution.  The
draw is a deterministic hash of the reflection's symmetry-unique index and
``structure_seed``, so symmetry mates and Friedel mates get the same
intensity and one crystal gives the same intensities on every image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Crystal",
    "COMMON_CRYSTALS",
    "COMMON_SPACE_GROUPS",
    "common_crystal",
    "random_crystal",
    "random_orientation",
    "space_group_operations",
    "reciprocal_basis",
]

# (name, space group (gemmi H-M), a, b, c, alpha, beta, gamma)
COMMON_CRYSTALS = {
    "lysozyme": ("P 43 21 2", (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)),
    "thermolysin": ("P 61 2 2", (92.8, 92.8, 128.5, 90.0, 90.0, 120.0)),
    "trypsin": ("P 21 21 21", (54.8, 58.5, 67.5, 90.0, 90.0, 90.0)),
    "insulin": ("I 21 3", (78.0, 78.0, 78.0, 90.0, 90.0, 90.0)),
    "c2_monoclinic": ("C 1 2 1", (102.4, 54.6, 71.3, 90.0, 116.8, 90.0)),
}

# space groups common in the PDB, by crystal system (for random crystals)
COMMON_SPACE_GROUPS = {
    "triclinic": ["P 1"],
    "monoclinic": ["P 1 21 1", "C 1 2 1", "P 1 2 1"],
    "orthorhombic": ["P 21 21 21", "P 21 21 2", "C 2 2 21", "I 2 2 2", "P 2 21 21"],
    "tetragonal": ["P 43 21 2", "P 41 21 2", "I 4", "P 42 21 2", "I 41 2 2", "P 4 21 2"],
    "trigonal": ["P 31 2 1", "P 32 2 1", "H 3", "P 3", "H 3 2"],
    "hexagonal": ["P 61 2 2", "P 65 2 2", "P 63", "P 6 2 2"],
    "cubic": ["I 21 3", "P 21 3", "I 2 3", "F 4 3 2"],
}
_SYSTEM_WEIGHTS = {
    "triclinic": 0.04,
    "monoclinic": 0.22,
    "orthorhombic": 0.32,
    "tetragonal": 0.16,
    "trigonal": 0.12,
    "hexagonal": 0.08,
    "cubic": 0.06,
}


@functools.lru_cache(maxsize=64)
def space_group_operations(space_group: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Symmetry operations of a space group, via gemmi.

    Parameters
    ----------
    space_group : str
        Hermann-Mauguin symbol or number ("P 43 21 2", "P43212", "96").

    Returns
    -------
    rot : (n_ops, 3, 3) int ndarray
        Rotation parts (acting on fractional coordinates), centring included.
    tran : (n_ops, 3) float ndarray
        Translation parts in fractions of a cell edge.
    name : str
        gemmi's full Hermann-Mauguin symbol.
    """
    import gemmi

    sg = gemmi.find_spacegroup_by_name(str(space_group))
    if sg is None:
        raise ValueError(f"unknown space group {space_group!r}")
    ops = list(sg.operations())
    rot = np.array([op.rot for op in ops], dtype=np.int64) // gemmi.Op.DEN
    tran = np.array([op.tran for op in ops], dtype=float) / gemmi.Op.DEN
    return rot, tran, sg.xhm()


def reciprocal_basis(cell) -> np.ndarray:
    """Busing-Levy ``B``: columns are ``a*, b*, c*`` (Å⁻¹) in the crystal Cartesian frame.

    Parameters
    ----------
    cell : sequence of 6 floats
        ``a, b, c`` in Å and ``alpha, beta, gamma`` in degrees.

    Returns
    -------
    B : (3, 3) ndarray
    """
    a, b, c, al, be, ga = (float(v) for v in cell)
    al, be, ga = (math.radians(v) for v in (al, be, ga))
    cx = math.cos(be)
    cy = (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz2 = 1.0 - cx * cx - cy * cy
    if min(a, b, c) <= 0 or cz2 <= 0:
        raise ValueError(f"impossible unit cell {tuple(cell)}")
    real = np.array(
        [
            [a, b * math.cos(ga), c * cx],
            [0.0, b * math.sin(ga), c * cy],
            [0.0, 0.0, c * math.sqrt(cz2)],
        ]
    )  # columns a, b, c
    return np.linalg.inv(real).T


def random_orientation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly from SO(3) (unit quaternion from 4 normals)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 hash of uint64 values."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1) from 64-bit hashes (53 significant bits)."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


@dataclass(frozen=True)
class Crystal:
    """A crystal: unit cell, space group and orientation.

    Parameters
    ----------
    cell : tuple of 6 float
        ``a, b, c`` (Å), ``alpha, beta, gamma`` (degrees).
    space_group : str
        Hermann-Mauguin symbol understood by gemmi.
    orientation : (3, 3) ndarray
        ``U``, rotating the crystal Cartesian frame into the lab frame.
    wilson_b : float
        Overall B factor (Å²) of the Wilson fall-off.
    structure_seed : int
        Seeds the per-reflection Wilson draws (the "structure").
    structure_factors : tuple (hkl (n, 3) int, amplitude (n,) float), optional
        Given amplitudes |F|; symmetry and Friedel mates are looked up through
        their unique index, unlisted reflections get intensity 0.
    name : str
        Informative ("lysozyme", "random").
    """

    cell: tuple
    space_group: str
    orientation: np.ndarray = field(default_factory=lambda: np.eye(3), compare=False)
    wilson_b: float = 25.0
    structure_seed: int = 0
    structure_factors: tuple | None = field(default=None, compare=False, repr=False)
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "cell", tuple(float(v) for v in self.cell))
        u = np.asarray(self.orientation, dtype=float)
        if u.shape != (3, 3) or not np.allclose(u @ u.T, np.eye(3), atol=1e-6):
            raise ValueError("orientation must be a 3x3 rotation matrix")
        object.__setattr__(self, "orientation", u)
        reciprocal_basis(self.cell)  # validates the cell
        space_group_operations(self.space_group)  # validates the symbol

    # ------------------------------------------------------------- matrices
    @property
    def B(self) -> np.ndarray:
        return reciprocal_basis(self.cell)

    @property
    def UB(self) -> np.ndarray:
        """``U @ B``: maps integer ``hkl`` to lab-frame reciprocal vectors (Å⁻¹)."""
        return self.orientation @ self.B

    def with_orientation(self, orientation: np.ndarray) -> Crystal:
        from dataclasses import replace

        return replace(self, orientation=orientation)

    def to_dict(self) -> dict:
        """JSON-friendly description (given structure factors are summarised)."""
        return {
            "name": self.name,
            "cell": list(self.cell),
            "space_group": space_group_operations(self.space_group)[2],
            "orientation": self.orientation.tolist(),
            "wilson_b": float(self.wilson_b),
            "structure_seed": int(self.structure_seed),
            "structure_factors": None if self.structure_factors is None else len(self.structure_factors[0]),
        }

    # --------------------------------------------------------- reflections
    def d_spacing(self, hkl: np.ndarray) -> np.ndarray:
        """Resolution d (Å) of reflections ``hkl`` (n, 3)."""
        r = np.asarray(hkl, dtype=float) @ self.B.T
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(r, axis=-1)

    def systematically_absent(self, hkl: np.ndarray) -> np.ndarray:
        """True for reflections extinguished by the space group (screw axes, glides, centring)."""
        hkl = np.asarray(hkl, dtype=np.int64)
        rot, tran, _ = space_group_operations(self.space_group)
        absent = np.zeros(len(hkl), dtype=bool)
        for r, t in zip(rot, tran):
            same = np.all(hkl @ r == hkl, axis=1)
            phase = hkl @ t
            absent |= same & (np.abs(phase - np.round(phase)) > 1e-6)
        return absent

    def _symmetry_info(self, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unique key (max over symmetry and Friedel mates), epsilon and centric flag."""
        hkl = np.asarray(hkl, dtype=np.int64)
        rot, _, _ = space_group_operations(self.space_group)
        rots = np.unique(rot, axis=0)
        base = np.int64(2048)
        key = np.full(len(hkl), np.iinfo(np.int64).min, dtype=np.int64)
        eps = np.zeros(len(hkl), dtype=np.int64)
        centric = np.zeros(len(hkl), dtype=bool)
        for r in rots:
            e = hkl @ r
            eps += np.all(e == hkl, axis=1)
            centric |= np.all(e == -hkl, axis=1)
            for s in (e, -e):
                k = ((s[:, 0] + 1024) * base + (s[:, 1] + 1024)) * base + (s[:, 2] + 1024)
                np.maximum(key, k, out=key)
        return key, eps, centric

    def intensities(self, hkl: np.ndarray) -> np.ndarray:
        """Intensity of each reflection (arbitrary scale, ``<I> = epsilon`` at d = inf).

        Parameters
        ----------
        hkl : (n, 3) int ndarray

        Returns
        -------
        intensity : (n,) float ndarray
            0 for systematic absences.
        """
        hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        key, eps, centric = self._symmetry_info(hkl)
        if self.structure_factors is not None:
            ref_hkl, amp = self.structure_factors
            ref_key, _, _ = self._symmetry_info(np.asarray(ref_hkl, dtype=np.int64).reshape(-1, 3))
            order = np.argsort(ref_key)
            sk = ref_key[order]
            pos = np.clip(np.searchsorted(sk, key), 0, max(len(sk) - 1, 0))
            found = (sk[pos] == key) if len(sk) else np.zeros(len(key), bool)
            out = np.where(found, np.asarray(amp, float)[order][pos] ** 2, 0.0)
        else:
            seed = np.uint64(int(self.structure_seed) & 0xFFFFFFFFFFFFFFFF)
            h1 = _splitmix64(key.astype(np.uint64) ^ _splitmix64(np.array([seed]))[0])
            h2 = _splitmix64(h1)
            u1, u2 = _uniform_from_hash(h1), _uniform_from_hash(h2)
            acentric = -np.log(u1)  # exponential, mean 1
            gauss = np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)
            z = np.where(centric, gauss * gauss, acentric)  # chi2(1) has mean 1
            d = self.d_spacing(hkl)
            with np.errstate(divide="ignore", invalid="ignore"):
                fall = np.exp(-self.wilson_b / (2.0 * d * d))
            out = eps * fall * z
        out[self.systematically_absent(hkl)] = 0.0
        return out


def common_crystal(name: str, *, orientation: np.ndarray | None = None, **kw) -> Crystal:
    """One of :data:`COMMON_CRYSTALS` ("lysozyme", "thermolysin", "trypsin", "insulin", "c2_monoclinic")."""
    if name not in COMMON_CRYSTALS:
        raise ValueError(f"unknown crystal {name!r}; known: {', '.join(COMMON_CRYSTALS)}")
    sg, cell = COMMON_CRYSTALS[name]
    return Crystal(cell, sg, np.eye(3) if orientation is None else orientation, name=name, **kw)


def _random_cell(system: str, rng: np.random.Generator) -> tuple:
    def edge():
        return float(np.exp(rng.uniform(np.log(30.0), np.log(160.0))))

    a, b, c = edge(), edge(), edge()
    if system == "triclinic":
        al, be, ga = rng.uniform(70, 115, size=3)
        return (a, b, c, al, be, ga)
    if system == "monoclinic":
        return (a, b, c, 90.0, float(rng.uniform(91, 125)), 90.0)
    if system == "orthorhombic":
        return (a, b, c, 90.0, 90.0, 90.0)
    if system == "tetragonal":
        return (a, a, c, 90.0, 90.0, 90.0)
    if system in ("trigonal", "hexagonal"):
        return (a, a, c, 90.0, 90.0, 120.0)
    return (a, a, a, 90.0, 90.0, 90.0)


def random_crystal(rng: np.random.Generator, *, common_fraction: float = 0.4) -> Crystal:
    """A random crystal: a common protein cell (``common_fraction`` of draws) or a random cell.

    Random cells pick a crystal system with PDB-like frequencies, a common
    space group of that system and edges log-uniform in 30-160 Å.  The
    orientation is uniform, the Wilson B uniform in 10-60 Å².
    """
    if rng.random() < common_fraction:
        name = str(rng.choice(list(COMMON_CRYSTALS)))
        sg, cell = COMMON_CRYSTALS[name]
    else:
        systems = list(_SYSTEM_WEIGHTS)
        p = np.array([_SYSTEM_WEIGHTS[s] for s in systems])
        system = systems[int(rng.choice(len(systems), p=p / p.sum()))]
        sg = str(rng.choice(COMMON_SPACE_GROUPS[system]))
        if system == "trigonal" and sg.startswith("H"):
            system = "hexagonal"
        cell = _random_cell(system, rng)
        name = "random"
    return Crystal(
        cell,
        sg,
        random_orientation(rng),
        wilson_b=float(rng.uniform(10.0, 60.0)),
        structure_seed=int(rng.integers(0, 2**62)),
        name=name,
    )
