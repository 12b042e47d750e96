"""SimNIBS coil files as coil dictionaries: ``.ccd`` dipole files and ``.tcd`` coil definition files.

Both readers return the dictionary of a coil JSON file (``Resources/coils/coil.schema.json``) without its
``format_version``; :class:`CondNetLogic.coil.Coil` builds the coil.  Frames and units follow SimNIBS's own
readers (``TmsCoil.from_ccd`` and ``TmsCoil.from_tcd``), whose coil frame is ours (``+z`` into the head,
``+y`` the handle).

``.ccd``
    A header line ``# description;key=value;...`` (``dIdtmax`` in A/us; optional), the number of dipoles, then
    ``x y z mx my mz`` per dipole: positions in m, moments in m^2 (A m^2 per ampere of coil current).
``.tcd``
    JSON.  ``coilElementList`` holds the stimulating elements, each driven by one entry of
    ``stimulatorList`` (``maxdIdt`` in A/s; optional) or by none:

    * type 1, magnetic dipoles: ``points`` (mm) and ``values`` (moments, A m^2 per ampere);
    * type 2, line elements: ``points`` (segment midpoints, mm) and ``values`` (the segment vector ``dl``,
      mm).  SimNIBS samples each element at its midpoint (``A = 1e-7 sum dl / |r - p|``); here each becomes
      the straight wire from ``p - dl/2`` to ``p + dl/2``, integrated exactly, and consecutive segments that
      meet are joined into polylines.  The two agree to ``O((|dl| / r)^2)``.  Elements of zero length (SimNIBS
      writes them at the corners of a wire path) carry no current and are left out.
    * type 3, an A-field sampled on a grid: not read (refused with a message; SimNIBS's NIfTI coil files, which
      hold the same, are read by :mod:`CondNetLogic.sampled_coil`).

    Arrays are lists of ``[x, y, z]`` or base64 strings of little-endian float64 triples, zlib-compressed
    or not (SimNIBS's code has written both).  An element's ``deformations`` (translations along ``x``/``y``/``z``
    in mm, rotations ``rot2p`` in degrees about the axis from ``point1`` to ``point2``, right-handed) are
    applied at their initial values, in the listed order, as SimNIBS places a coil before optimisation.
    Casings and coil models (shapes for display and optimisation) are ignored.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from pathlib import Path

import numpy as np

from .scalp import rotate_about

__all__ = ["read_ccd", "read_tcd"]

#: Two segment ends closer than this (mm) are the same vertex of a polyline.
_JOIN_TOL_MM = 1e-6

#: The note of a coil whose file gives no maximum dI/dt.
NO_DIDT_MAX_NOTE = ("The file gives no maximum dI/dt (stimulator output 100 %): give dI/dt explicitly (condnet "
                    "efield --didt A/s; SimNIBS's default is 1e6 A/s).")

_TCD_TYPES = {1: "magnetic dipoles", 2: "line elements", 3: "a sampled A-field grid"}


def _ccd_header(line: str) -> tuple:
    """``(description, {key: value})`` of a ``.ccd`` file's first line: ``# text;key=value;key=value``.

    Every ``key=value`` counts, the first part's too (older files start with one); a first part without ``=``
    is the description.
    """
    parts = [part.strip() for part in line.strip().lstrip("#").split(";")]
    description = parts[0] if "=" not in parts[0] else ""
    fields = {}
    for part in parts:
        match = re.fullmatch(r"(\w+)\s*=\s*(.*)", part)
        if match:
            fields[match.group(1)] = match.group(2).strip()
    return description, fields


def read_ccd(path: Path) -> dict:
    """A SimNIBS ``.ccd`` dipole coil file as a coil dictionary (positions m -> mm, ``dIdtmax`` A/us -> A/s).

    Raises
    ------
    ValueError
        If the file is not text, is truncated (fewer dipoles than announced), has rows that are not 6 numbers,
        or gives a ``dIdtmax`` that is not a positive number.  A file without ``dIdtmax`` (as SimNIBS's
        ``Magstim_70mm_Fig8.ccd``) gives a coil without a maximum dI/dt.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark (Notepad) is dropped
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from err
    if len(lines) < 3:
        raise ValueError(f"{path}: a .ccd file has a header line, the number of dipoles and one line per dipole; "
                         f"this one has {len(lines)} lines")
    description, fields = _ccd_header(lines[0])
    try:
        count = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"{path}: line 2 must give the number of dipoles; got {lines[1]!r}") from None
    if count < 1:
        raise ValueError(f"{path}: line 2 announces {count} dipoles; a coil needs at least one")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            row = [float(value) for value in text.split()]
        except ValueError:
            row = []
        if len(row) != 6:
            raise ValueError(f"{path}, line {number}: expected 6 numbers (x y z in m, mx my mz in m^2); "
                             f"got {line!r}")
        rows.append(row)
    if len(rows) != count:
        raise ValueError(f"{path}: line 2 announces {count} dipoles but the file holds {len(rows)} "
                         "(truncated or edited file?)")
    didt_max, didt_note = _ccd_didt_max(path, fields.get("dIdtmax"))
    data = np.asarray(rows, dtype=float)
    label = " ".join(fields[key] for key in ("brand", "coilname") if fields.get(key) not in (None, "", "none"))
    return {
        "name": path.stem,
        "description": "; ".join(text for text in (label, description) if text) or f"Dipole coil from {path.name}",
        "notes": [f"Imported from the SimNIBS coil file {path.name} ({count} dipoles; positions m -> mm, "
                  "moments in m^2 per A of coil current; dIdtmax A/us -> A/s)."] + didt_note,
        **({} if didt_max is None else {"didt_max_a_per_s": didt_max}),
        "winding": {
            "type": "dipoles", "positions_mm": (data[:, :3] * 1e3).tolist(), "moments_m2": data[:, 3:].tolist()
        },
    }


def _ccd_didt_max(path: Path, value) -> tuple:
    """``(dI/dt max in A/s or None, notes)`` from a ``.ccd`` header's ``dIdtmax`` (A/us; absent or ``none``: None).

    A list (``dIdtmax=147,100``: one value per stimulator, as SimNIBS documents it) gives its first value.
    """
    if value is None or value.strip().lower() in ("", "none"):
        return None, [NO_DIDT_MAX_NOTE]
    parts = [part.strip() for part in value.split(",")]
    try:
        didt_max = float(parts[0]) * 1e6
    except ValueError:
        didt_max = float("nan")
    if not (np.isfinite(didt_max) and didt_max > 0):
        raise ValueError(f"{path}: dIdtmax={value!r} is not a positive number (A/us)")
    if len(parts) > 1:
        return didt_max, [f"dIdtmax lists {len(parts)} stimulators ({value} A/us); the first is the maximum here."]
    return didt_max, []


def _tcd_vectors(value, where: str) -> np.ndarray:
    """A ``.tcd`` array of 3-vectors (a list, or base64 of float64 triples, zlib-compressed or not) as (N, 3)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as err:
            raise ValueError(f"{where}: not valid base64 ({err})") from None
        try:
            raw = zlib.decompress(raw)
        except zlib.error:
            pass  # earlier SimNIBS code wrote the float64 bytes uncompressed
        if len(raw) == 0 or len(raw) % 24:
            raise ValueError(f"{where}: {len(raw)} bytes are not float64 [x, y, z] triples (truncated file?)")
        array = np.frombuffer(raw, dtype="<f8").reshape(-1, 3).astype(float)
    else:
        try:
            array = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a list of [x, y, z] numbers") from None
        if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
            raise ValueError(f"{where}: expected a non-empty list of [x, y, z] numbers; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: holds non-finite numbers")
    return array


def _deformation(coil: dict, index: int) -> np.ndarray:
    """The 4x4 matrix (mm) of ``deformList[index]`` at its initial value."""
    deforms = coil.get("deformList", [])
    if not isinstance(deforms, list):
        raise ValueError(f"deformList: expected a list of deformations; got {type(deforms).__name__}")
    if not isinstance(index, int) or not 0 <= index < len(deforms):
        raise ValueError(f"deformation {index!r} is not in deformList ({len(deforms)} entries)")
    deform, where = deforms[index], f"deformList[{index}]"
    if not isinstance(deform, dict):
        raise ValueError(f"{where}: expected an object with the deformation's type and value")
    if "deformRange" in deform:  # the later layout: the value lives in deformRangeList
        ranges, which = coil.get("deformRangeList", []), deform["deformRange"]
        if (not isinstance(ranges, list) or not isinstance(which, int) or not 0 <= which < len(ranges)
                or not isinstance(ranges[which], dict)):
            raise ValueError(f"{where}: deformRange {which!r} is not an entry of deformRangeList")
        value = ranges[which].get("initial")
    else:
        value = deform.get("initial")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{where}: no numeric initial value; got {value!r}")
    matrix = np.eye(4)
    kind = deform.get("type")
    if kind in ("x", "y", "z"):
        matrix["xyz".index(kind), 3] = value
    elif kind == "rot2p":
        try:
            start, end = (np.asarray(deform[key], dtype=float).reshape(3) for key in ("point1", "point2"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: a rot2p rotation needs point1 and point2 as [x, y, z] (mm)") from None
        length = np.linalg.norm(end - start)
        if not np.isfinite(length) or length == 0.0:
            raise ValueError(f"{where}: point1 and point2 must be two different finite points")
        rotation = np.column_stack([rotate_about(unit, end - start, value) for unit in np.eye(3)])
        matrix[:3, :3] = rotation
        matrix[:3, 3] = start - rotation @ start
    else:
        raise ValueError(f"{where}: unknown deformation type {kind!r}; expected 'x', 'y', 'z' or 'rot2p'")
    return matrix


def _polylines(starts: np.ndarray, ends: np.ndarray) -> list:
    """Segments (start, end) joined into polylines wherever one ends where the next starts."""
    breaks = np.flatnonzero(np.linalg.norm(starts[1:] - ends[:-1], axis=1) > _JOIN_TOL_MM) + 1
    return [np.vstack([starts[run[0]], ends[run]]) for run in np.split(np.arange(len(starts)), breaks)]


def read_tcd(path: Path) -> dict:
    """A SimNIBS ``.tcd`` coil definition file as a coil dictionary (see the module docstring).

    Raises
    ------
    ValueError
        If the file is not JSON, holds a sampled A-field element, drives its elements from more than one
        stimulator, gives a ``maxdIdt`` that is not a positive number, or has malformed arrays, indices or deformations.
    """
    try:
        coil = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON coil definition file ({err})") from err
    elements = coil.get("coilElementList") if isinstance(coil, dict) else None
    if not isinstance(elements, list) or not elements or not all(isinstance(item, dict) for item in elements):
        raise ValueError(f"{path}: a .tcd file needs a non-empty coilElementList of stimulating elements")
    stimulators = coil.get("stimulatorList", [])
    if not isinstance(stimulators, list):
        raise ValueError(f"{path}: stimulatorList must be a list of stimulators")
    polylines, positions, moments, used = [], [], [], set()
    counts, dropped = {1: 0, 2: 0}, 0
    for number, element in enumerate(elements):
        where = f"coilElementList[{number}]" + (f" ({element['name']})" if element.get("name") else "")
        kind = element.get("type")
        if kind == 3:
            raise ValueError(f"{path}: {where} is {_TCD_TYPES[3]} (type 3), which is not read from a .tcd file: use "
                             "the coil's line-element or dipole model (.tcd or .ccd), or convert it with SimNIBS's "
                             "coil2nifti and use the NIfTI file")
        if kind not in (1, 2):
            raise ValueError(f"{path}: {where} has type {kind!r}; expected 1 (dipoles), 2 (line elements) or 3")
        stimulator = element.get("stimulator")
        if stimulator is not None and (not isinstance(stimulator, int) or not 0 <= stimulator < len(stimulators)):
            raise ValueError(f"{path}: {where}: stimulator {stimulator!r} is not in stimulatorList "
                             f"({len(stimulators)} entries)")
        used.add(stimulator)
        try:
            points = _tcd_vectors(element.get("points"), f"{where}/points")
            values = _tcd_vectors(element.get("values"), f"{where}/values")
            deformations = element.get("deformations", [])
            if not isinstance(deformations, list):
                raise ValueError(f"{where}/deformations: expected a list of indices into deformList")
            matrix = np.eye(4)
            for index in deformations:
                matrix = _deformation(coil, index) @ matrix
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        if len(points) != len(values):
            raise ValueError(f"{path}: {where} has {len(points)} points but {len(values)} values")
        points = points @ matrix[:3, :3].T + matrix[:3, 3]
        values = values @ matrix[:3, :3].T  # moments and segment vectors turn with the element
        counts[kind] += len(points)
        if kind == 1:
            positions.append(points)
            moments.append(values)
            continue
        carrying = np.linalg.norm(values, axis=1) > 0.0  # SimNIBS writes zero-length elements at path corners
        if not carrying.any():
            raise ValueError(f"{path}: {where} has only line elements of zero length (no current path)")
        dropped += int((~carrying).sum())
        points, values = points[carrying], values[carrying]
        polylines += _polylines(points - 0.5 * values, points + 0.5 * values)
    if len(used) > 1:
        raise ValueError(f"{path}: the elements are driven by {len(used)} stimulators ({sorted(used, key=str)}); "
                         "CondNet takes one dI/dt per coil: split the file into one coil per stimulator")
    only = used.pop()
    didt_max = stimulators[only].get("maxdIdt") if only is not None and isinstance(stimulators[only], dict) else None
    if didt_max is not None and (isinstance(didt_max, bool) or not isinstance(didt_max, (int, float)) or not (
            np.isfinite(didt_max) and didt_max > 0)):
        raise ValueError(f"{path}: the stimulator's maxdIdt must be a positive number (A/s); got {didt_max!r}")
    label = " ".join(str(coil[key]) for key in ("brand", "name", "version") if coil.get(key))
    winding = {"type": "polylines" if not positions else "dipoles" if not polylines else "mixed"}
    if polylines:
        winding["polylines_mm"] = [line.tolist() for line in polylines]
    if positions:
        winding["positions_mm"] = np.concatenate(positions).tolist()
        winding["moments_m2"] = np.concatenate(moments).tolist()
    return {
        "name": path.stem,
        "description": label or f"Coil from {path.name}",
        "notes": [f"Imported from the SimNIBS coil file {path.name} ({counts[2]} line elements as "
                  f"{len(polylines)} polylines, {counts[1]} dipoles; deformations at their initial values; "
                  "maxdIdt in A/s)."]
        + ([f"{dropped} line elements of zero length (corners of the wire path) carry no current and were left "
            "out."] if dropped else [])
        + ([NO_DIDT_MAX_NOTE] if didt_max is None else []),
        **({} if didt_max is None else {"didt_max_a_per_s": float(didt_max)}),
        "winding": winding,
    }
