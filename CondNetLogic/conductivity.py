"""Tissue classes, the paper's conductivity tables (Table I), and label map -> conductivity.

Tissue maps are ``uint8`` arrays holding indices into :data:`TISSUES` (0 = air).  Conductivities are
in S/m.  The network target is the conductivity normalised to ``[0, 1 - tau]`` (paper Sec. III-A) and
the prediction is mapped back with Eq. 3: ``C = max(sigma) / (1 - tau) * L``.

References
----------
Rashed, Gomez-Tames, Hirata, "Deep learning-based development of personalized human head model with
non-uniform conductivity for brain stimulation", IEEE TMI 39(7), 2020, doi:10.1109/TMI.2020.2969682.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "DEFAULT_TAU",
    "SHIPPED_MAPPINGS",
    "TABLE_A",
    "TABLE_B",
    "TABLES",
    "TISSUES",
    "TISSUE_INDEX",
    "ConductivityTable",
    "denormalise",
    "level_scale",
    "get_table",
    "label_mapping_path",
    "labels_to_tissues",
    "load_table",
    "normalise",
    "read_label_mapping",
    "resource_path",
    "tissues_to_conductivity",
]

#: Tissue classes of the paper's Table I, in the order of tissue-map indices (0 = air, outside the head).
TISSUES: tuple = (
    "air",
    "wm",
    "gm",
    "csf",
    "cerebellum",
    "blood",
    "vitreous_humor",
    "muscle",
    "fat",
    "mucous",
    "skin",
    "dura",
    "cortical_bone",
    "cancellous_bone",
)
TISSUE_INDEX = {name: index for index, name in enumerate(TISSUES)}

#: Normalisation margin tau of the paper (Sec. III-A).
DEFAULT_TAU = 0.1


def resource_path(*parts: str) -> Path:
    """Path of a file in the extension's ``Resources/`` folder (beside the package)."""
    return Path(__file__).resolve().parent.parent.joinpath("Resources", *parts)


@dataclass(frozen=True)
class ConductivityTable:
    """Conductivity (S/m) per tissue name; air is always 0 S/m.

    Raises
    ------
    ValueError
        If a tissue is unknown or a value is negative or not finite.
    """

    name: str
    values: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {}
        for tissue, value in self.values.items():
            if tissue not in TISSUE_INDEX:
                raise ValueError(f"table {self.name!r}: unknown tissue {tissue!r}; known: {', '.join(TISSUES)}")
            value = float(value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"table {self.name!r}: conductivity of {tissue} must be >= 0 S/m, got {value}")
            values[tissue] = value
        values["air"] = 0.0
        if max(values.values()) <= 0:
            raise ValueError(f"table {self.name!r}: no tissue has a positive conductivity (Eq. 3 needs max(sigma) > 0)")
        object.__setattr__(self, "values", values)

    @property
    def sigma_max(self) -> float:
        """Largest conductivity in the table (S/m), the ``max(sigma_n)`` of Eq. 3."""
        return max(self.values.values())

    def lookup(self) -> np.ndarray:
        """Array (len(TISSUES),) of S/m indexed by tissue index; NaN for tissues the table lacks."""
        table = np.full(len(TISSUES), np.nan, dtype=np.float32)
        for tissue, value in self.values.items():
            table[TISSUE_INDEX[tissue]] = value
        return table

    def to_dict(self) -> dict:
        """JSON-ready ``{"name": ..., "values": {tissue: S/m}}``."""
        return {"name": self.name, "values": dict(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping) -> ConductivityTable:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["name"]), dict(data["values"]))


#: Table I (A): fourth-order Cole-Cole model at 10 kHz (S/m).
TABLE_A = ConductivityTable(
    "A",
    {
        "blood": 0.70, "cancellous_bone": 0.08, "cortical_bone": 0.02, "cerebellum": 0.13, "csf": 2.0,
        "dura": 0.5, "fat": 0.04, "gm": 0.10, "mucous": 0.07, "muscle": 0.34, "skin": 0.10,
        "vitreous_humor": 1.5, "wm": 0.07,
    },
)
#: Table I (B): typical values from computational studies (S/m).
TABLE_B = ConductivityTable(
    "B",
    {
        "blood": 0.70, "cancellous_bone": 0.025, "cortical_bone": 0.007, "cerebellum": 0.276, "csf": 1.654,
        "dura": 0.5, "fat": 0.04, "gm": 0.276, "mucous": 0.07, "muscle": 0.40, "skin": 0.456,
        "vitreous_humor": 1.5, "wm": 0.126,
    },
)
TABLES = {"A": TABLE_A, "B": TABLE_B}


def _csv_rows(path: Path, columns: set, what: str) -> list:
    """``[(line number, {column: stripped text})]`` of a CSV file with at least ``columns``.

    A UTF-8 byte-order mark (Excel's "CSV UTF-8"), spaces around names and values, and rows with every cell
    empty are accepted.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if not columns <= set(header):
            raise ValueError(f"{path}: a {what} needs {' and '.join(repr(c) for c in sorted(columns))} columns; "
                             f"got {header}")
        rows = []
        for line, cells in enumerate(reader, start=2):
            cells = [cell.strip() for cell in cells]
            if any(cells):
                rows.append((line, dict(zip(header, cells + [""] * (len(header) - len(cells))))))
    return rows


def _refuse_duplicate_keys(pairs: list) -> dict:
    """``object_pairs_hook`` of :func:`json.loads`: a key given twice is an error, not "the last one wins"."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice")
    return dict(pairs)


def load_table(path: str | os.PathLike) -> ConductivityTable:
    """Read a user conductivity table.

    JSON: ``{"name": "mine", "values": {"gm": 0.1, ...}}`` or a flat ``{"gm": 0.1, ...}``.
    CSV: a header with ``tissue`` and ``conductivity`` (S/m) columns.

    Raises
    ------
    ValueError
        If the file is malformed, gives a tissue twice or names an unknown tissue.
    """
    path = Path(path)
    try:
        name, values = _table_file_values(path)
        try:
            return ConductivityTable(name, values)
        except ValueError as err:  # an unknown tissue, a negative conductivity
            raise ValueError(f"{path}: {err}") from None
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed conductivity table ({err!r}); see load_table's docstring") from err


def _table_file_values(path: Path) -> tuple:
    """``(name, {tissue: value})`` as a table file gives them; ``ValueError`` naming the file where a tissue is
    given twice or a CSV value is not a number."""
    if path.suffix.lower() == ".json":
        text = path.read_text(encoding="utf-8-sig")
        try:
            data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
        except json.JSONDecodeError:  # a ValueError too: load_table calls it malformed
            raise
        except ValueError as err:  # a key given twice
            raise ValueError(f"{path}: {err}") from None
        if "values" in data:
            return str(data.get("name", path.stem)), data["values"]
        return path.stem, data
    values = {}
    for line, row in _csv_rows(path, {"tissue", "conductivity"}, "conductivity table"):
        if row["tissue"] in values:
            raise ValueError(f"{path}:{line}: tissue {row['tissue']!r} is given twice")
        try:
            values[row["tissue"]] = float(row["conductivity"])
        except ValueError:
            raise ValueError(f"{path}:{line}: conductivity {row['conductivity']!r} of {row['tissue']!r} is not "
                             "a number (S/m)") from None
    return path.stem, values


def get_table(name_or_path: str | os.PathLike) -> ConductivityTable:
    """``"A"`` or ``"B"`` (Table I) or the path of a user table.

    Raises
    ------
    FileNotFoundError
        If it is neither A, B nor an existing file.
    ValueError
        If the file is malformed (:func:`load_table`).
    """
    if str(name_or_path).upper() in TABLES:
        return TABLES[str(name_or_path).upper()]
    if not Path(name_or_path).is_file():
        raise FileNotFoundError(f"conductivity table {str(name_or_path)!r} is neither 'A', 'B' nor an existing "
                                "JSON/CSV table file")
    return load_table(name_or_path)


#: Names of the shipped label mappings (``Resources/tissue_maps/<name>_labels.csv``).
SHIPPED_MAPPINGS = ("synthseg", "samseg")


def label_mapping_path(name_or_path: str | os.PathLike) -> Path:
    """Path of a label mapping: a shipped one by name (:data:`SHIPPED_MAPPINGS`) or a CSV file.

    Raises
    ------
    FileNotFoundError
        If it is neither a shipped name nor an existing file.
    """
    if str(name_or_path) in SHIPPED_MAPPINGS:
        return resource_path("tissue_maps", f"{name_or_path}_labels.csv")
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"label mapping {str(name_or_path)!r} is neither "
                                f"{' nor '.join(repr(n) for n in SHIPPED_MAPPINGS)} nor an existing CSV file")
    return path


def read_label_mapping(path: str | os.PathLike) -> dict:
    """Read a ``label,...,tissue`` CSV into ``{label: tissue index}``.

    The shipped mappings are ``Resources/tissue_maps/synthseg_labels.csv`` (the SynthSeg training
    label maps) and ``Resources/tissue_maps/samseg_labels.csv`` (SAMSEG output).

    Raises
    ------
    ValueError
        If the file lacks ``label``/``tissue`` columns, a label is not an integer, a tissue is unknown,
        or a label appears twice.
    """
    path = Path(path)
    mapping: dict = {}
    for line, row in _csv_rows(path, {"label", "tissue"}, "label mapping"):
        try:
            label = int(row["label"])
        except ValueError as err:
            raise ValueError(f"{path}:{line}: label {row['label']!r} is not an integer") from err
        tissue = row["tissue"]
        if tissue not in TISSUE_INDEX:
            raise ValueError(f"{path}:{line}: unknown tissue {tissue!r} for label {label}")
        if label in mapping:
            raise ValueError(f"{path}:{line}: label {label} is mapped twice")
        mapping[label] = TISSUE_INDEX[tissue]
    if not mapping:
        raise ValueError(f"{path}: the label mapping is empty")
    return mapping


def labels_to_tissues(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Convert a label map to a tissue map (uint8 indices into :data:`TISSUES`).

    Parameters
    ----------
    labels : ndarray
        Integer labels (float arrays holding whole numbers are accepted, as some label files store them).
    mapping : dict
        ``{label: tissue index}`` from :func:`read_label_mapping`.

    Raises
    ------
    ValueError
        If a label is not a whole number or is missing from the mapping (named in the message).
    """
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise ValueError("label map holds non-integer values; is it an intensity image?")
        labels = rounded.astype(np.int64)
    present = np.unique(labels)
    missing = [int(label) for label in present if int(label) not in mapping]
    if len(missing) > 20:  # an intensity image passed as labels: say so instead of listing every value
        raise ValueError(f"{len(missing)} labels are not in the label-to-tissue mapping (the first: {missing[:10]}); "
                         "is it an intensity image rather than a label map, or the wrong mapping?")
    if missing:
        raise ValueError(f"labels {missing} are not in the label-to-tissue mapping")
    lookup_labels = np.array(sorted(mapping), dtype=np.int64)
    lookup_tissues = np.array([mapping[label] for label in lookup_labels], dtype=np.uint8)
    return lookup_tissues[np.searchsorted(lookup_labels, labels)]


def tissues_to_conductivity(tissues: np.ndarray, table: ConductivityTable) -> np.ndarray:
    """Uniform-per-tissue conductivity (float32, S/m) from a tissue map.

    Raises
    ------
    ValueError
        If the map holds a tissue the table lacks (named in the message), never a silent zero.
    """
    tissues = np.asarray(tissues)
    lookup = table.lookup()
    present = np.unique(tissues)
    for extreme in (present.min(initial=0), present.max(initial=0)):
        if not 0 <= extreme < len(TISSUES):
            raise ValueError(f"tissue index {int(extreme)} out of range (0..{len(TISSUES) - 1})")
    lacking = [TISSUES[int(t)] for t in present if np.isnan(lookup[int(t)])]
    if lacking:
        raise ValueError(f"conductivity table {table.name!r} has no value for tissues {lacking}")
    return lookup[tissues.astype(np.intp)]


def normalise(sigma: np.ndarray, sigma_max: float, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Scale conductivity (S/m) to the network target range ``[0, 1 - tau]`` (inverse of Eq. 3)."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    return (np.asarray(sigma, dtype=np.float32) * np.float32((1.0 - tau) / sigma_max)).astype(np.float32)


def level_scale(sigma_max: float, tau: float = DEFAULT_TAU) -> np.float32:
    """The factor of paper Eq. 3, ``max(sigma) / (1 - tau)`` (S/m per level), as float32."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    return np.float32(sigma_max / (1.0 - tau))


def denormalise(level: np.ndarray, sigma_max: float, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Paper Eq. 3: ``C = max(sigma) / (1 - tau) * L`` (S/m, float32)."""
    return np.asarray(level, dtype=np.float32) * level_scale(sigma_max, tau)
