"""TMS coils as thin wires, magnetic dipoles or a sampled A-field: data files, the coil frame, and placing a coil.

Coil frame
----------
Coordinates in millimetres.  The origin is the coil centre on the winding plane (for a figure-8 coil:
midway between the two wing centres, where the induced field peaks).  ``+z`` is the coil normal
pointing **into the head** (from the coil towards the scalp).  ``+y`` points along the handle.
``+x = y x z``: the two wings of a figure-8 coil lie at ``x < 0`` and ``x > 0``.  The frame is
right-handed.

Each polyline carries the coil current ``I`` in the order of its vertices.  In the shipped figure-8
coils the wing at ``+x`` circulates counter-clockwise about ``+z`` and the wing at ``-x`` clockwise, so
below the centre both wings carry the current along ``-y``: for a positive ``dI/dt`` the induced primary
field ``-dA/dt`` under the centre points along ``+y``, towards the handle.

Dipole coils and SimNIBS coil files
-----------------------------------
A coil may instead be a set of magnetic dipoles (positions in mm, moments in m^2 = A m^2 per ampere of coil
current), the model of SimNIBS's ``.ccd`` coil files, which :meth:`Coil.from_ccd` and :func:`load_coil` read
(positions m -> mm, ``dIdtmax`` A/us -> A/s), or wires and dipoles together.  SimNIBS 4's ``.tcd`` files
(:meth:`Coil.from_tcd`) give line elements, read as straight wires, and dipoles; see
:mod:`CondNetLogic.simnibs_coil`.  SimNIBS's coil frame is this one (``+z`` into the head,
``+y`` the handle; its ``matsimnibs`` is ``coil_to_ras``), and SimNIBS puts the coil origin ``distance`` mm
outside the skin along the normal as :func:`coil_pose` does with ``scalp_offset_mm``, so a SimNIBS coil file
lands where SimNIBS puts it.

Sampled A-field coils
---------------------
SimNIBS's NIfTI coil files (``coil2nifti``) hold the A-field per ampere on a grid in this coil frame
(:meth:`Coil.from_nifti`, :mod:`CondNetLogic.sampled_coil`).  Such a coil has no wires or dipoles: its
``winding`` is ``{"type": "sampled_field", "file": ..., "values_sha256": ...}``, and a coil JSON file with that
winding names a NIfTI file (relative to the JSON file's folder) and may add the maximum dI/dt the NIfTI file
cannot give.

Pose
----
``coil_to_ras`` (4x4, mm) maps coil-frame points to RAS: its columns are the RAS directions of the coil
``x``, ``y`` (handle) and ``z`` (normal into the head) axes and the RAS position of the coil centre.
:func:`coil_pose` builds it from a scalp point, the normal and the handle direction, placing the coil
centre ``scalp_offset_mm`` (default 4 mm, as SimNIBS) outside the scalp along ``-z``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .conductivity import resource_path
from .sampled_coil import SampledField, is_nifti_coil_file, read_nifti_coil
from .simnibs_coil import NO_DIDT_MAX_NOTE, read_ccd, read_tcd

__all__ = [
    "DEFAULT_SCALP_OFFSET_MM",
    "Coil",
    "check_coil_to_ras",
    "coil_file",
    "coil_pose",
    "figure8_spiral_polylines",
    "list_coils",
    "load_coil",
    "read_coil_to_ras",
    "user_coil_dir",
]

logger = logging.getLogger(__name__)

#: Distance (mm) from the scalp to the coil's winding plane used by :func:`coil_pose` (SimNIBS default).
DEFAULT_SCALP_OFFSET_MM = 4.0

#: Vertices per turn of a generated spiral when the coil file does not say.
DEFAULT_POINTS_PER_TURN = 64
#: Most polyline vertices a figure-8 spiral may have per wing (turns x points_per_turn): beyond this a coil file
#: is a mistake, and building it would take minutes and gigabytes.
MAX_SPIRAL_VERTICES = 1_000_000

_SCHEMA_FILE = "coil.schema.json"
_FORMAT_VERSION = 1

#: User coil files already reported as hidden by a shipped coil of the same name (reported once per process).
_REPORTED_HIDDEN: set = set()


def _schema() -> dict:
    with open(resource_path("coils", _SCHEMA_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def figure8_spiral_polylines(
    inner_diameter_mm: float,
    outer_diameter_mm: float,
    turns: float,
    *,
    wing_spacing_mm: float | None = None,
    points_per_turn: int = DEFAULT_POINTS_PER_TURN,
) -> list:
    """Wire polylines (coil frame, mm) of a planar figure-8 coil made of two Archimedean spirals.

    Parameters
    ----------
    inner_diameter_mm, outer_diameter_mm : float
        Diameters (mm) between which each wing's spiral runs.
    turns : float
        Turns per wing.
    wing_spacing_mm : float, optional
        Distance (mm) between the two wing centres; default ``outer_diameter_mm`` (the wings touch at the
        coil centre).
    points_per_turn : int
        Polyline vertices per turn (>= 8).

    Returns
    -------
    list of ndarray (N, 3)
        Two closed polylines (last vertex equals the first), in ``z = 0``: the wing at ``+x``
        counter-clockwise about ``+z``, the wing at ``-x`` clockwise.  Each spiral runs from the outer to
        the inner radius, starting on the side facing away from the coil centre, and is closed by a
        straight lead from its inner end back to its start.

    Raises
    ------
    ValueError
        If the diameters are not ``0 < inner < outer``, ``turns <= 0``, ``points_per_turn < 8``, the wing
        would have more than :data:`MAX_SPIRAL_VERTICES` vertices, or the wings would overlap
        (``wing_spacing_mm < outer_diameter_mm``).
    """
    inner, outer, turns = float(inner_diameter_mm), float(outer_diameter_mm), float(turns)
    spacing = outer if wing_spacing_mm is None else float(wing_spacing_mm)
    if not 0.0 < inner < outer:
        raise ValueError(f"need 0 < inner_diameter_mm < outer_diameter_mm; got {inner} and {outer}")
    if turns <= 0.0:
        raise ValueError(f"turns must be > 0; got {turns}")
    if int(points_per_turn) < 8:
        raise ValueError(f"points_per_turn must be >= 8; got {points_per_turn}")
    if not turns * int(points_per_turn) <= MAX_SPIRAL_VERTICES:  # also catches inf
        raise ValueError(f"turns x points_per_turn = {turns:g} x {int(points_per_turn)} exceeds "
                         f"{MAX_SPIRAL_VERTICES:,} vertices per wing")
    if spacing < outer:
        raise ValueError(f"wing_spacing_mm ({spacing}) < outer_diameter_mm ({outer}): the wings would overlap")
    n_points = int(np.ceil(turns * int(points_per_turn))) + 1
    t = np.linspace(0.0, 1.0, n_points)
    radius = 0.5 * outer - 0.5 * (outer - inner) * t
    polylines = []
    for side, sense in ((+1.0, +1.0), (-1.0, -1.0)):
        # start angle: the side of the wing facing away from the coil centre
        start = 0.0 if side > 0 else np.pi
        angle = start + sense * 2.0 * np.pi * turns * t
        wing = np.stack(
            [side * 0.5 * spacing + radius * np.cos(angle), radius * np.sin(angle), np.zeros_like(t)], axis=1
        )
        polylines.append(np.vstack([wing, wing[:1]]))
    return polylines


def _polylines_from_winding(winding: dict) -> list:
    kind = winding["type"]
    if kind in ("dipoles", "sampled_field"):
        return []
    if kind == "figure8_spiral":
        return figure8_spiral_polylines(
            winding["inner_diameter_mm"],
            winding["outer_diameter_mm"],
            winding["turns"],
            wing_spacing_mm=winding.get("wing_spacing_mm"),
            points_per_turn=winding.get("points_per_turn", DEFAULT_POINTS_PER_TURN),
        )
    if kind in ("polylines", "mixed"):
        polylines = []
        for index, line in enumerate(winding["polylines_mm"]):
            if not isinstance(line, list) or len(line) < 2:
                raise ValueError(f"invalid coil description at winding/polylines_mm/{index}: a polyline needs at "
                                 "least 2 vertices")
            line = _vectors(line, f"polylines_mm/{index}")
            polylines.append(line)
            if not np.all(np.isfinite(line)):
                raise ValueError(f"polyline {index} holds non-finite coordinates")
            if np.any(np.linalg.norm(np.diff(line, axis=0), axis=1) == 0.0):
                raise ValueError(f"polyline {index} has repeated consecutive vertices (zero-length segment)")
        return polylines
    raise ValueError(f"unknown winding type {kind!r}; expected 'figure8_spiral', 'polylines', 'dipoles', 'mixed' or "
                     "'sampled_field'")


def _schema_view(data: dict) -> dict:
    """``data`` for the schema check: a winding's arrays cut to their first dipole and first polyline segment.

    jsonschema would take about 0.6 s for a coil of 14,000 dipoles and 4.6 s for 50,000 wire segments;
    :func:`_dipoles_from_winding` and :func:`_polylines_from_winding` check every row instead.
    """
    winding = data.get("winding") if isinstance(data, dict) else None
    if not isinstance(winding, dict):
        return data
    cut = dict(winding)
    for key in ("positions_mm", "moments_m2", "polylines_mm"):
        if isinstance(cut.get(key), list):
            cut[key] = cut[key][:1]
    if cut.get("polylines_mm") and isinstance(cut["polylines_mm"][0], list):
        cut["polylines_mm"] = [cut["polylines_mm"][0][:2]]
    return {**data, "winding": cut}


def _vectors(rows, name: str) -> np.ndarray:
    """A list of ``[x, y, z]`` numbers as a float array (N, 3); anything else raises ``ValueError``."""
    if not all(isinstance(row, list) and len(row) == 3 for row in rows) or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for row in rows for value in row
    ):
        raise ValueError(f"invalid coil description at winding/{name}: every item must be 3 numbers")
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def _dipoles_from_winding(winding: dict) -> tuple:
    """``(positions_mm (D, 3), moments_m2 (D, 3))`` of a ``dipoles`` or ``mixed`` winding; empty for wires only."""
    if winding["type"] not in ("dipoles", "mixed"):
        return np.zeros((0, 3)), np.zeros((0, 3))
    positions = _vectors(winding["positions_mm"], "positions_mm")
    moments = _vectors(winding["moments_m2"], "moments_m2")
    if len(positions) != len(moments):
        raise ValueError(f"the dipole winding has {len(positions)} positions but {len(moments)} moments")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(moments))):
        raise ValueError("the dipole winding holds non-finite positions or moments")
    return positions, moments


def _sampled_from_winding(winding: dict, base_dir: Optional[Path]) -> Optional[SampledField]:
    """The A-field grid of a ``sampled_field`` winding, its ``file`` resolved against ``base_dir``; else None.

    Fills in the winding's ``values_sha256`` when it has none, and raises ``ValueError`` when it differs.
    """
    if winding["type"] != "sampled_field":
        return None
    path = Path(winding["file"])
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    if not is_nifti_coil_file(path):
        raise ValueError(f"invalid coil description at winding/file: {winding['file']!r} is not a NIfTI file "
                         "(.nii or .nii.gz)")
    sampled = read_nifti_coil(path)
    expected = winding.setdefault("values_sha256", sampled.sha256)
    if expected != sampled.sha256:
        raise ValueError(f"{path}: its A-field (sha256 {sampled.sha256[:12]}...) is not the one the coil description "
                         f"names (values_sha256 {str(expected)[:12]}...): the file was replaced or edited")
    return sampled


@dataclass(frozen=True, eq=False)
class Coil:
    """A TMS coil of thin wires, magnetic dipoles or a sampled A-field, described by a coil file (module docstring).

    Build it with :meth:`from_dict`, :meth:`from_file`, :meth:`from_ccd`, :meth:`from_tcd`, :meth:`from_nifti` or
    :func:`load_coil`.

    Attributes
    ----------
    name : str
        Coil name.
    didt_max : float or None
        Current slope dI/dt at maximum stimulator output, A/s; None when the coil file gives none (SimNIBS's
        ``Magstim_70mm_Fig8.ccd``): then dI/dt must be given explicitly.
    winding : dict
        The winding as in the file: a ``figure8_spiral`` generator spec, explicit ``polylines``, ``dipoles``, or
        ``mixed`` (polylines and dipoles, from a SimNIBS ``.tcd`` file that has both), or ``sampled_field`` (a NIfTI
        file of the A-field).
    polylines_mm : tuple of ndarray (N, 3)
        Wire polylines in the coil frame, mm (generated from ``winding``; empty for a dipole coil).
    description : str
    notes : tuple of str
        Sources of the numbers.
    dipole_positions_mm : ndarray (D, 3)
        Dipole positions in the coil frame, mm (``D = 0`` for a wire coil).
    dipole_moments_m2 : ndarray (D, 3)
        Dipole moments per ampere of coil current, m^2 (A m^2 / A), coil-frame components.
    sampled : SampledField or None
        The A-field grid of a ``sampled_field`` winding (no wires or dipoles then); None otherwise.
    """

    name: str
    didt_max: Optional[float]
    winding: dict
    polylines_mm: tuple
    description: str = ""
    notes: tuple = ()
    dipole_positions_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    dipole_moments_m2: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sampled: Optional[SampledField] = None

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: Union[str, os.PathLike, None] = None) -> Coil:
        """Validate a coil dictionary against ``coil.schema.json`` and build the coil.

        ``base_dir`` is the folder against which a ``sampled_field`` winding's relative ``file`` is resolved
        (default: the working directory); :meth:`from_file` passes the coil file's folder.

        Raises
        ------
        ValueError
            If the dictionary does not match the schema or the winding is inconsistent (message names the
            offending field), or a sampled field's file is unreadable or not the one its ``values_sha256`` names.
        FileNotFoundError
            If a sampled field's file does not exist.
        """
        import jsonschema

        try:
            jsonschema.validate(_schema_view(data), _schema())
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "<root>"
            raise ValueError(f"invalid coil description at {where}: {err.message}") from err
        winding = json.loads(json.dumps(data["winding"]))
        polylines = tuple(_polylines_from_winding(winding))
        positions, moments = _dipoles_from_winding(winding)
        sampled = _sampled_from_winding(winding, None if base_dir is None else Path(base_dir))
        didt_max = float(data["didt_max_a_per_s"]) if "didt_max_a_per_s" in data else None
        if didt_max is not None and not np.isfinite(didt_max):
            raise ValueError(f"invalid coil description at didt_max_a_per_s: {didt_max} is not a finite slope (A/s)")
        for array in (*polylines, positions, moments):
            array.setflags(write=False)
        return cls(
            name=data["name"],
            didt_max=didt_max,
            winding=winding,
            polylines_mm=polylines,
            description=data.get("description", ""),
            notes=tuple(data.get("notes", ())),
            dipole_positions_mm=positions,
            dipole_moments_m2=moments,
            sampled=sampled,
        )

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> Coil:
        """Read and validate a coil JSON file.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is not valid JSON or does not match the schema.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"coil file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from err
        try:
            return cls.from_dict(data, base_dir=path.absolute().parent)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    @classmethod
    def from_ccd(cls, path: Union[str, os.PathLike]) -> Coil:
        """Read a SimNIBS ``.ccd`` dipole coil file.

        The format: a first line ``# description;key=value;...`` (``coilname``, ``dIdtmax`` in A/us, and others
        that are ignored), a line with the number of dipoles, then one line ``x y z mx my mz`` per dipole
        (position in m, moment in m^2 per A of coil current; ``#`` starts a comment).  The coil is named after
        the file (as :func:`list_coils` lists it); ``brand`` and ``coilname`` go into its description.
        :meth:`to_file` writes it as a coil JSON file.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is malformed or truncated (fewer dipoles than announced), has no ``dIdtmax``, or holds
            non-finite values.
        """
        return cls._from_simnibs(path, read_ccd)

    @classmethod
    def from_tcd(cls, path: Union[str, os.PathLike]) -> Coil:
        """Read a SimNIBS ``.tcd`` coil definition file (JSON; SimNIBS 4) of line elements and/or dipoles.

        Line elements (midpoint, segment vector, mm) become straight wires integrated exactly, joined into
        polylines; dipoles keep their positions (mm) and moments (m^2 per A); element deformations are applied
        at their initial values; ``maxdIdt`` is in A/s.  See :mod:`CondNetLogic.simnibs_coil` for the details.
        The coil is named after the file.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not JSON or is malformed, holds a sampled A-field element (type 3), drives its elements
            from more than one stimulator, or gives no positive ``maxdIdt``.
        """
        return cls._from_simnibs(path, read_tcd)

    @classmethod
    def from_nifti(cls, path: Union[str, os.PathLike]) -> Coil:
        """Read a SimNIBS NIfTI coil file (the A-field per ampere on a coil-frame grid; :mod:`.sampled_coil`).

        The coil is named after the file (without ``.nii``/``.nii.gz``).  The file gives no maximum dI/dt; a coil
        JSON file with a ``sampled_field`` winding that names this file can add one (see the module docstring).

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is not a readable 4D ``(X, Y, Z, 3)`` NIfTI file with a finite, non-zero A-field and a voxel-to-
            coil transform.
        """
        path = Path(path).absolute()
        return cls.from_dict({
            "format_version": _FORMAT_VERSION,
            "name": _coil_name(path),
            "description": f"A-field sampled on a grid ({path.name}, a SimNIBS NIfTI coil file)",
            "notes": [NO_DIDT_MAX_NOTE],
            "winding": {"type": "sampled_field", "file": path.name},
        }, base_dir=path.parent)

    @classmethod
    def _from_simnibs(cls, path: Union[str, os.PathLike], reader: Callable[[Path], dict]) -> Coil:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"coil file {path} does not exist")
        try:
            return cls.from_dict({"format_version": _FORMAT_VERSION, **reader(path)})
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from err

    def to_dict(self) -> dict:
        """The coil as a schema-valid dictionary; ``Coil.from_dict(c.to_dict())`` rebuilds the same coil."""
        data = {
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            **({} if self.didt_max is None else {"didt_max_a_per_s": self.didt_max}),
            "winding": json.loads(json.dumps(self.winding)),
        }
        if self.sampled is not None:  # absolute, so that the dictionary rebuilds the coil from any working folder
            data["winding"]["file"] = str(Path(self.sampled.path).absolute())
        if self.description:
            data["description"] = self.description
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    def to_file(self, path: Union[str, os.PathLike], *, overwrite: bool = False) -> Path:
        """Write the coil as JSON; an existing file is replaced only with ``overwrite``.

        A sampled field's ``file`` is written relative to the new file's folder (absolute where no relative path
        exists), so :meth:`from_file` finds it.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        data = self.to_dict()
        if self.sampled is not None:
            try:
                data["winding"]["file"] = os.path.relpath(self.sampled.path, path.absolute().parent)
            except ValueError:  # another drive (Windows)
                data["winding"]["file"] = str(self.sampled.path)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict` (identifies the coil in result sidecars).

        A sampled field counts by its ``values_sha256``, not by where its file lies.
        """
        data = self.to_dict()
        if self.sampled is not None:
            del data["winding"]["file"]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def segments_mm(self) -> np.ndarray:
        """Straight wire segments in the coil frame, float array (S, 2, 3), mm: ``[:, 0]`` start, ``[:, 1]`` end.

        ``S = 0`` for a dipole coil.
        """
        if not self.polylines_mm:
            return np.zeros((0, 2, 3))
        return np.concatenate([np.stack([line[:-1], line[1:]], axis=1) for line in self.polylines_mm], axis=0)

    def segments_ras_mm(self, coil_to_ras: np.ndarray) -> np.ndarray:
        """Wire segments placed by ``coil_to_ras`` (4x4, mm): float array (S, 2, 3), RAS mm."""
        pose = check_coil_to_ras(coil_to_ras)
        return self.segments_mm() @ pose[:3, :3].T + pose[:3, 3]

    def dipoles_ras(self, coil_to_ras: np.ndarray) -> tuple:
        """Dipoles placed by ``coil_to_ras`` (4x4, mm): ``(positions (D, 3) RAS mm, moments (D, 3) m^2, RAS)``."""
        pose = check_coil_to_ras(coil_to_ras)
        rotation = pose[:3, :3]  # a proper rotation turns the moments (axial vectors) like positions
        return self.dipole_positions_mm @ rotation.T + pose[:3, 3], self.dipole_moments_m2 @ rotation.T

    def source_points_mm(self) -> np.ndarray:
        """Every wire vertex and dipole position in the coil frame, float array (N, 3), mm."""
        return np.concatenate([self.segments_mm().reshape(-1, 3), self.dipole_positions_mm], axis=0)

    def __repr__(self) -> str:
        kind = self.winding["type"]
        if self.sampled is not None:
            maximum = "None" if self.didt_max is None else f"{self.didt_max:.3g} A/s"
            return f"Coil(name={self.name!r}, winding={kind!r}, grid={self.sampled.shape}, didt_max={maximum})"
        segments, dipoles = sum(len(line) - 1 for line in self.polylines_mm), len(self.dipole_positions_mm)
        size = ", ".join(([f"segments={segments}"] if segments or not dipoles else [])
                         + ([f"dipoles={dipoles}"] if dipoles else []))
        maximum = "None" if self.didt_max is None else f"{self.didt_max:.3g} A/s"
        return f"Coil(name={self.name!r}, winding={kind!r}, {size}, didt_max={maximum})"


def check_coil_to_ras(coil_to_ras: np.ndarray, *, tol: float = 1e-6) -> np.ndarray:
    """Validate a coil pose and return it as a float (4, 4) array.

    Parameters
    ----------
    coil_to_ras : array (4, 4)
        Coil frame -> RAS, mm.
    tol : float
        Tolerance on ``R^T R = I`` and ``det R = 1``.

    Raises
    ------
    ValueError
        If the shape is not (4, 4), values are not finite, the last row is not ``[0, 0, 0, 1]``, or the
        rotation is not orthonormal with determinant +1 (a scaled, sheared or mirrored pose would warp the
        coil).
    """
    pose = np.asarray(coil_to_ras, dtype=float)
    if pose.shape != (4, 4):
        raise ValueError(f"coil_to_ras must be a 4x4 matrix; got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise ValueError("coil_to_ras holds NaN or infinite values")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"coil_to_ras last row must be [0, 0, 0, 1]; got {pose[3]}")
    rotation = pose[:3, :3]
    orth_error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if orth_error > tol:
        raise ValueError(
            f"coil_to_ras rotation is not orthonormal (max |R^T R - I| = {orth_error:.3g} > {tol}); "
            "scaling or shear would deform the coil"
        )
    det = float(np.linalg.det(rotation))
    if abs(det - 1.0) > tol:
        raise ValueError(f"coil_to_ras rotation must have determinant +1 (right-handed); got {det:.6g}")
    return pose


#: A pose read from a file whose rotation is this close to orthonormal (``max |R^T R - I|``) is taken as rounded
#: (3 or 4 decimals, as neuronavigation and SimNIBS logs print it) and replaced by the nearest rotation.
ROUNDED_POSE_TOL = 2e-3


def read_coil_to_ras(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read a coil pose (4x4, coil frame -> RAS, mm) from a file and validate it (:func:`check_coil_to_ras`).

    A text file of 4 rows of 4 numbers (spaces or commas; the Slicer panel exports ``coil_to_ras.txt``), or a
    JSON file holding the matrix as a list of rows or under ``"coil_to_ras"`` (``condnet efield``'s
    ``efield.json``) or ``"matsimnibs"`` (SimNIBS's coil pose, which is ``coil_to_ras`` in the head's world
    coordinates).  A rotation off orthonormal by at most :data:`ROUNDED_POSE_TOL` (printed with few decimals) is
    replaced by the nearest rotation (polar decomposition) and the log says so; a larger deviation is refused.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it holds no 4x4 matrix of numbers or the matrix is not a rigid pose.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"coil pose file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                keys = [key for key in ("coil_to_ras", "matsimnibs") if key in data]
                if not keys:
                    raise ValueError("a JSON pose file holds the matrix as a list of rows, or under 'coil_to_ras' "
                                     "or 'matsimnibs'")
                data = data[keys[0]]
            pose = np.asarray(data, dtype=float)
        else:
            rows = [line.split("#", 1)[0].replace(",", " ").split() for line in text.splitlines()]
            pose = np.asarray([[float(value) for value in row] for row in rows if row], dtype=float)
        if pose.shape == (4, 4) and np.all(np.isfinite(pose)):
            deviation = float(np.abs(pose[:3, :3].T @ pose[:3, :3] - np.eye(3)).max())
            if 1e-6 < deviation <= ROUNDED_POSE_TOL and np.linalg.det(pose[:3, :3]) > 0:
                u, _, vt = np.linalg.svd(pose[:3, :3])
                pose = pose.copy()
                pose[:3, :3] = u @ vt
                logger.info("%s: the rotation is %.2g off orthonormal (rounded values?); using the nearest rotation",
                            path, deviation)
        return check_coil_to_ras(pose)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a 4x4 coil pose (coil frame -> RAS, mm): {err}") from None


def coil_pose(
    center_ras: np.ndarray,
    normal_into_head: np.ndarray,
    handle_direction: np.ndarray,
    *,
    scalp_offset_mm: float = DEFAULT_SCALP_OFFSET_MM,
) -> np.ndarray:
    """Coil pose (``coil_to_ras``, 4x4, mm) for a coil over a scalp point.

    Parameters
    ----------
    center_ras : array (3,)
        Scalp point under the coil centre, RAS mm.
    normal_into_head : array (3,)
        Direction of the coil ``+z`` axis, pointing into the head (RAS; any length).
    handle_direction : array (3,)
        Approximate handle direction (coil ``+y``), RAS; its component along the normal is removed.
    scalp_offset_mm : float
        Distance (mm, >= 0) from the scalp point to the coil's winding plane; the coil centre lies at
        ``center_ras - scalp_offset_mm * z``.

    Returns
    -------
    ndarray (4, 4)
        Columns: coil ``x``, ``y`` (handle), ``z`` (into the head) in RAS, and the coil centre (RAS mm).

    Raises
    ------
    ValueError
        If a vector is zero or not finite, the handle is parallel to the normal, or the offset is negative.

    Examples
    --------
    >>> pose = coil_pose([0, 0, 100], [0, 0, -1], [0, 1, 0])
    >>> pose[:3, 3].tolist(), pose[:3, 2].tolist()
    ([0.0, 0.0, 104.0], [0.0, 0.0, -1.0])
    """
    center = np.asarray(center_ras, dtype=float).reshape(-1)
    normal = np.asarray(normal_into_head, dtype=float).reshape(-1)
    handle = np.asarray(handle_direction, dtype=float).reshape(-1)
    for name, vector in (("center_ras", center), ("normal_into_head", normal), ("handle_direction", handle)):
        if vector.shape != (3,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"{name} must be 3 finite numbers; got {vector}")
    if not np.isfinite(scalp_offset_mm) or scalp_offset_mm < 0:
        raise ValueError(f"scalp_offset_mm must be >= 0; got {scalp_offset_mm}")
    if np.linalg.norm(normal) == 0.0:
        raise ValueError("normal_into_head is the zero vector")
    z_axis = normal / np.linalg.norm(normal)
    if np.linalg.norm(handle) == 0.0:
        raise ValueError("handle_direction is the zero vector")
    y_axis = handle - np.dot(handle, z_axis) * z_axis
    if np.linalg.norm(y_axis) < 1e-6 * np.linalg.norm(handle):
        raise ValueError(f"handle_direction {handle} is parallel to the coil normal {z_axis}")
    y_axis /= np.linalg.norm(y_axis)
    x_axis = np.cross(y_axis, z_axis)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x_axis, y_axis, z_axis
    pose[:3, 3] = center - float(scalp_offset_mm) * z_axis
    return pose


def user_coil_dir() -> Path:
    """Folder for your own coil files: ``$CONDNET_COIL_DIR``, else ``~/.condnet/coils`` (need not exist)."""
    root = os.environ.get("CONDNET_COIL_DIR")
    return Path(root) if root else Path.home() / ".condnet" / "coils"


def _coil_name(path: Path) -> str:
    """A coil file's name without its suffix (``.nii.gz`` as one suffix)."""
    name = path.name
    return name[:-len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


#: Coil file suffixes, in the order in which a folder's files of one name are preferred.
_COIL_SUFFIXES = (".json", ".ccd", ".tcd", ".nii.gz", ".nii")


def _coil_files() -> dict:
    """``{name: path}`` of the coil files by name: ``Resources/coils``, then :func:`user_coil_dir`.

    In each folder a coil JSON file comes before a ``.ccd``, a ``.tcd``, then a NIfTI file of the same name; a
    shipped coil before a user's.
    """
    found = {}
    for folder in (resource_path("coils"), user_coil_dir()):
        if not folder.is_dir():
            continue
        files = [path for path in sorted(folder.iterdir()) if path.is_file() and path.name != _SCHEMA_FILE]
        for suffix in _COIL_SUFFIXES:  # any case: MY_COIL.CCD too
            for path in files:
                if not path.name.lower().endswith(suffix):
                    continue
                name = _coil_name(path)
                if name in found and found[name].parent != path.parent and path not in _REPORTED_HIDDEN:
                    _REPORTED_HIDDEN.add(path)
                    logger.warning("coil file %s is not used: a shipped coil has the name %r (rename the file)",
                                   path, name)
                found.setdefault(name, path)
    return found


def list_coils() -> list:
    """Names of the coil files (coil JSON, SimNIBS ``.ccd``, ``.tcd`` and NIfTI, without the suffix), sorted.

    The shipped ones in ``Resources/coils`` and your own in :func:`user_coil_dir`.
    """
    return sorted(_coil_files())


def coil_file(name_or_path: Union[str, os.PathLike]) -> Path:
    """Path of a coil file given by path or by name (see :func:`list_coils`).

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither an existing file nor the name of a coil file.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    files = _coil_files()
    if str(name_or_path) in files:
        return files[str(name_or_path)]
    raise ValueError(f"no coil file or coil named {str(name_or_path)!r}; coils: {', '.join(sorted(files))} "
                     f"(add your own to {user_coil_dir()})")


def load_coil(name_or_path: Union[str, os.PathLike]) -> Coil:
    """Load a coil by name (see :func:`list_coils`), or a coil JSON, SimNIBS ``.ccd``, ``.tcd`` or NIfTI file by path.

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither an existing file nor a shipped coil name, or the file is invalid.
    """
    path = coil_file(name_or_path)
    stat = path.stat()
    # absolute, not resolved: a coil reached through a link is named after the link
    key = (path.absolute(), stat.st_mtime_ns, stat.st_size)
    coil = _read_coil_file(*key)
    if coil.sampled is not None and not coil.sampled.is_current():  # a coil JSON file's NIfTI file was replaced
        _read_coil_file.cache_clear()
        coil = _read_coil_file(*key)
    return coil


@lru_cache(maxsize=8)
def _read_coil_file(path: Path, mtime_ns: int, size: int) -> Coil:
    """The coil of one version of a file (the key holds its time stamp and size), read once: the Slicer panel loads
    its coil on every coil move, and a SimNIBS file of 14,000 dipoles takes 0.1 s to parse.  Coils are immutable."""
    if is_nifti_coil_file(path):
        return Coil.from_nifti(path)
    reader = {".ccd": Coil.from_ccd, ".tcd": Coil.from_tcd}.get(path.suffix.lower(), Coil.from_file)
    return reader(path)
