"""CondNet weight files: safetensors tensors plus a JSON header, and the shipped-weights manifest.

File format
-----------
One ``.safetensors`` file holds the networks of all slicing directions it was trained for (usually
``axial``, ``sagittal`` and ``coronal``; one file keeps the three in step and is hashed once).
Tensor names are ``<direction>.<state_dict key>``, e.g. ``axial.decoder_1.level_1.map.weight``.
The safetensors metadata entry ``"condnet"`` is a JSON header::

    {"format": "condnet-weights", "format_version": 1,
     "config": CondNetConfig.to_dict(), "directions": ["axial", ...],
     "tables": [ConductivityTable.to_dict(), ...],   # one per output track V, in order
     "tau": 0.1, "input": {"channels": ["t1", "t2"], "size": 256, "spacing_mm": 1.0, "normalisation": ...},
     "output": {"units": "S/m", "scaling": "Eq. 3: C = max(sigma) / (1 - tau) * sigmoid(logits)"},
     "training": {...data, seed, epochs, final losses...}, "package_version": "0.1.0"}

Reading uses :func:`safetensors.torch.load_file`, which parses tensors and never executes code.

Manifest
--------
``Resources/weights.json`` lists shipped weights: ``{"format_version": 1, "default": id | null,
"weights": [{"id", "version", "file" (relative to Resources/), "sha256", "size"}]}``.  The hash and size
are verified whenever a listed file is loaded.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ._types import PathLike
from .conductivity import ConductivityTable, resource_path
from .errors import WeightsError
from .io import file_sha256, replaced_through_temporary, write_text

__all__ = [
    "DEFAULT_KEYS",
    "DIRECTIONS",
    "FORMAT_VERSION",
    "CondNetWeights",
    "default_roles",
    "default_weights_id",
    "file_sha256",
    "installed_weights",
    "load_weights",
    "read_manifest",
    "register_weights",
    "save_weights",
]

logger = logging.getLogger(__name__)

#: Slicing directions and the model-grid axis each one slices (model grid axes are R, A, S).
DIRECTIONS: Dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
FORMAT_VERSION = 1
_FORMAT = "condnet-weights"
_META_KEY = "condnet"


@dataclass
class CondNetWeights:
    """Loaded CondNet weights: header, one state dict per slicing direction, and provenance.

    Attributes
    ----------
    header : dict
        The JSON header (see module docstring).
    state_dicts : dict
        direction -> {state_dict key: Tensor}.
    path : Path
        File the weights came from.
    sha256 : str
        Hex digest of that file.
    weights_id : str or None
        Manifest id when the file is a listed one.
    """

    header: dict
    state_dicts: Dict[str, dict]
    path: Path
    sha256: str
    weights_id: Optional[str] = None
    config: object = field(init=False, repr=False)
    tables: Tuple[ConductivityTable, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from .network import CondNetConfig

        self.config = CondNetConfig.from_dict(self.header["config"])
        self.tables = tuple(ConductivityTable.from_dict(t) for t in self.header["tables"])

    @property
    def directions(self) -> Tuple[str, ...]:
        """Directions present in the file, in the header's order."""
        return tuple(self.header["directions"])

    @property
    def tau(self) -> float:
        """Normalisation margin tau of Eq. 3."""
        return float(self.header["tau"])

    def build(self, direction: str, *, device="cpu"):
        """A :class:`~CondNetLogic.network.CondNet` for ``direction`` in eval mode on ``device``."""
        from .network import CondNet

        if direction not in self.state_dicts:
            raise WeightsError(f"weights {self.path} have no {direction!r} network; they hold {self.directions}")
        model = CondNet(self.config)
        model.load_state_dict(self.state_dicts[direction])
        return model.to(device).eval()

    def describe(self) -> dict:
        """Short provenance for sidecars: id, file, sha256, versions, directions, tables."""
        return {
            "id": self.weights_id,
            "file": str(self.path),
            "sha256": self.sha256,
            "format_version": self.header["format_version"],
            "package_version": self.header.get("package_version"),
            "directions": list(self.directions),
            "tables": [t.name for t in self.tables],
            "input_channels": self.header["input"]["channels"],
        }


def save_weights(
    path: PathLike,
    state_dicts: Mapping[str, Mapping],
    *,
    config,
    tables: Sequence[ConductivityTable],
    tau: float,
    input_spec: Mapping,
    training: Mapping,
    overwrite: bool = False,
) -> str:
    """Write CondNet weights to a safetensors file and return its SHA-256.

    Parameters
    ----------
    path : path-like
        Output ``.safetensors`` file.
    state_dicts : mapping
        direction -> model ``state_dict`` (tensors are copied to CPU, made contiguous).
    config : CondNetConfig
        Architecture the state dicts belong to.
    tables : sequence of ConductivityTable
        One table per output track, in output-channel order.
    tau : float
        Normalisation margin of the targets.
    input_spec : mapping
        ``{"channels": [...], "size": int, "spacing_mm": float, "normalisation": str}``.
    training : mapping
        Provenance (data, seed, epochs, final losses, ...); must be JSON-serialisable.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        For unknown directions, a table count different from ``config.out_channels``, or an input
        channel list whose length differs from ``config.in_channels``.
    """
    from safetensors.torch import save_file

    from . import __version__
    from .network import CondNet

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    unknown = sorted(set(state_dicts) - set(DIRECTIONS))
    if unknown or not state_dicts:
        raise ValueError(f"directions must be a non-empty subset of {sorted(DIRECTIONS)}; got {sorted(state_dicts)}")
    if len(tables) != config.out_channels:
        raise ValueError(f"config has {config.out_channels} output tracks but {len(tables)} tables were given")
    channels = list(input_spec["channels"])
    if len(channels) != config.in_channels:
        raise ValueError(f"config has {config.in_channels} inputs but input_spec lists channels {channels}")
    expected_keys = set(CondNet(config).state_dict())
    tensors = {}
    for direction, state in state_dicts.items():
        if set(state) != expected_keys:
            raise ValueError(f"{direction} state dict does not match the config (missing or extra keys)")
        for key, tensor in state.items():
            tensors[f"{direction}.{key}"] = tensor.detach().to("cpu").contiguous()
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "directions": [d for d in DIRECTIONS if d in state_dicts],
        "tables": [t.to_dict() for t in tables],
        "tau": float(tau),
        "input": dict(input_spec),
        "output": {"units": "S/m", "scaling": "Eq. 3: C = max(sigma) / (1 - tau) * sigmoid(logits)"},
        "training": dict(training),
        "package_version": __version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_through_temporary(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(header)})
    return file_sha256(path)


def _read_header(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own SafetensorError / OSError for corrupt files
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from err
    if _META_KEY not in metadata:
        raise WeightsError(f"{path} has no CondNet header (safetensors metadata key {_META_KEY!r})")
    try:
        header = json.loads(metadata[_META_KEY])
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: CondNet header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: CondNet header is a JSON {type(header).__name__}, expected an object")
    if header.get("format") != _FORMAT:
        raise WeightsError(f"{path}: header format is {header.get('format')!r}, expected {_FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: weights format version {version!r} is not supported (this package reads <= {FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "directions", "tables", "tau", "input") if k not in header]
    if missing:
        raise WeightsError(f"{path}: header lacks {missing}")
    if not isinstance(header["input"], dict):
        raise WeightsError(f"{path}: header 'input' must be an object, got {header['input']!r}")
    tau = header["tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau < 1.0:
        raise WeightsError(f"{path}: header tau must be a number in [0, 1), got {tau!r}")
    if not isinstance(header["directions"], list):
        raise WeightsError(f"{path}: header directions must be a list, got {header['directions']!r}")
    return header


def _manifest_path(manifest_path: Optional[PathLike]) -> Path:
    """``manifest_path``, or the shipped ``Resources/weights.json`` when None."""
    return Path(manifest_path) if manifest_path is not None else resource_path("weights.json")


def read_manifest(manifest_path: Optional[PathLike] = None) -> dict:
    """Read ``Resources/weights.json`` (or ``manifest_path``); raises :class:`WeightsError` if malformed."""
    manifest_path = _manifest_path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError as err:
        raise WeightsError(f"weights manifest {manifest_path} not found") from err
    except json.JSONDecodeError as err:
        raise WeightsError(f"weights manifest {manifest_path} is not valid JSON: {err}") from err
    if not isinstance(manifest.get("weights"), list):
        raise WeightsError(f"weights manifest {manifest_path} has no 'weights' list")
    return manifest


#: Manifest keys of the default weights: T1 + T2, then T1 only.
DEFAULT_KEYS = ("default", "default_t1_only")


def default_roles(manifest: dict) -> Dict[str, str]:
    """``{weights id: role}`` of the manifest's defaults: ``"default"`` (T1 + T2) and ``"default without a T2"``."""
    roles = {manifest.get(key): role for key, role in zip(DEFAULT_KEYS, ("default", "default without a T2"))}
    roles.pop(None, None)
    return roles


def default_weights_id(t2_given: bool, manifest_path: Optional[PathLike] = None, *,
                       tables: Optional[Sequence[str]] = None) -> Optional[str]:
    """The shipped weights to use by default: T1 + T2 weights when a T2 is given, T1-only ones when not.

    Falls back to the other kind when the manifest lists only one; None when it lists no default.  With
    ``tables`` (Table I columns, e.g. ``["B"]``), the default is kept if it predicts all of them; otherwise the
    first listed weights that do are taken: T1 + T2 weights first when a T2 is given, only T1-only weights when
    not.

    Raises
    ------
    WeightsError
        If ``tables`` are given and no listed weights predict them all.
    """
    manifest_path = _manifest_path(manifest_path)
    return _default_id(read_manifest(manifest_path), t2_given, manifest_path, tables)


def installed_weights(manifest_path: Optional[PathLike] = None) -> Dict[str, Tuple[list, list]]:
    """``{id: (input channels, table names)}`` of the manifest's weights, read from their files' headers.

    Entries whose file is missing or has no readable header are left out (loading them says why).
    """
    manifest_path = _manifest_path(manifest_path)
    return _installed(read_manifest(manifest_path), manifest_path)


def _installed(manifest: dict, manifest_path: Path) -> Dict[str, Tuple[list, list]]:
    listed = {}
    for entry in manifest["weights"]:
        try:
            header = _read_header(manifest_path.parent / entry["file"])
        except (WeightsError, KeyError, TypeError):
            continue
        listed[entry.get("id")] = (list(header["input"].get("channels", [])),
                                   [table.get("name") for table in header["tables"] if isinstance(table, dict)])
    return listed


def _default_id(manifest: dict, t2_given: bool, manifest_path: Path,
                tables: Optional[Sequence[str]] = None) -> Optional[str]:
    preferred, other = DEFAULT_KEYS if t2_given else DEFAULT_KEYS[::-1]
    default = manifest.get(preferred) or manifest.get(other)
    if not tables:
        return default
    listed = _installed(manifest, manifest_path)
    # T1 + T2 weights first when a T2 is given (T1-only ones run too: they ignore it); without a T2 only T1-only
    # weights can run.
    order = [default] + sorted(listed, key=lambda weights_id: len(listed[weights_id][0]) != 2)
    for weights_id in order:
        channels, names = listed.get(weights_id, ((), ()))
        if channels and (t2_given or len(channels) == 1) and set(tables) <= set(names):
            return weights_id
    installed = "; ".join(f"{weights_id} ({' + '.join(channels).upper()}: table {', '.join(names)})"
                          for weights_id, (channels, names) in listed.items()) or "none"
    raise WeightsError(
        f"no installed CondNet weights predict table {' and '.join(tables)}"
        f"{'' if t2_given else ' from a T1 alone'}; installed: {installed}. Train them with "
        f"`condnet train --tables {' '.join(tables)}` and pass the file as the weights"
    )


def _manifest_entry(manifest: dict, weights_id: Optional[str], manifest_path: Path) -> dict:
    if weights_id is None:
        weights_id = manifest.get("default")
        if weights_id is None:
            raise WeightsError(
                f"no default CondNet weights are installed ({manifest_path} names no default). Train them with "
                "`condnet train --preset cpu --data DIR --out Resources/weights/condnet-cpu.safetensors "
                "--register condnet-cpu`, or pass a weights file explicitly"
            )
    for entry in manifest["weights"]:
        if entry.get("id") == weights_id:
            return entry
    ids = [entry.get("id") for entry in manifest["weights"]]
    raise WeightsError(f"weights id {weights_id!r} is not in {manifest_path}; listed ids: {ids}")


def load_weights(
    weights: Optional[PathLike] = None,
    *,
    weights_id: Optional[str] = None,
    manifest_path: Optional[PathLike] = None,
    t2_given: bool = True,
    tables: Optional[Sequence[str]] = None,
) -> CondNetWeights:
    """Load CondNet weights without executing code.

    Parameters
    ----------
    weights : path-like, optional
        A ``.safetensors`` file (e.g. a user's own); None loads a manifest entry.
    weights_id : str, optional
        Manifest id to load when ``weights`` is None; default: :func:`default_weights_id` (the manifest's
        ``default``, or its ``default_t1_only`` when ``t2_given`` is false).
    manifest_path : path-like, optional
        Manifest to use instead of ``Resources/weights.json``.
    t2_given : bool
        Whether a T2 scan comes with the T1; picks the default weights when neither ``weights`` nor
        ``weights_id`` is given.
    tables : sequence of str, optional
        Table I columns the weights must predict (e.g. ``["B"]``): they pick the default weights
        (:func:`default_weights_id`), and any weights that do not predict them all are refused.

    Returns
    -------
    CondNetWeights

    Raises
    ------
    WeightsError
        If no default is installed, the file is missing or corrupt, its hash or size differs from the
        manifest, its header is unknown, its tensors do not match the architecture in the header, or the
        weights do not predict ``tables``.
    """
    from safetensors.torch import load_file

    from .network import CondNet, CondNetConfig

    manifest_path = _manifest_path(manifest_path)
    entry = None
    if weights is None:
        manifest = read_manifest(manifest_path)
        if weights_id is None:
            weights_id = _default_id(manifest, t2_given, manifest_path, tables)
        entry = _manifest_entry(manifest, weights_id, manifest_path)
        path = (manifest_path.parent / entry["file"]).resolve()
        if not path.is_file():
            raise WeightsError(
                f"weights {entry['id']!r} are listed in {manifest_path} but {path} is missing; "
                "reinstall the extension or retrain them with `condnet train`"
            )
    else:
        if weights_id is not None:
            raise ValueError("pass either a weights file or a weights_id, not both")
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} not found")
    sha256 = file_sha256(path)
    if entry is not None:
        if path.stat().st_size != entry.get("size") or sha256 != entry.get("sha256"):
            raise WeightsError(
                f"{path} does not match the manifest entry {entry['id']!r}: size {path.stat().st_size} vs "
                f"{entry.get('size')}, sha256 {sha256} vs {entry.get('sha256')} (corrupt or replaced file)"
            )
    header = _read_header(path)
    try:
        config = CondNetConfig.from_dict(header["config"])
        predicted = [ConductivityTable.from_dict(t) for t in header["tables"]]
    except (TypeError, ValueError, KeyError) as err:
        raise WeightsError(f"{path}: invalid architecture or tables in header: {err}") from err
    if len(predicted) != config.out_channels:
        raise WeightsError(f"{path}: {len(predicted)} tables for {config.out_channels} output tracks")
    missing = [name for name in tables or () if name not in [table.name for table in predicted]]
    if missing:
        raise WeightsError(f"the weights {path.name} predict table {', '.join(t.name for t in predicted)}, not "
                           f"{', '.join(missing)}: choose other weights or another conductivity table")
    _check_inputs(header["input"], config.in_channels, path)
    try:
        check_table_names([table.name for table in predicted])
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from err
    directions = header["directions"]
    if not directions or set(directions) - set(DIRECTIONS) or len(set(directions)) != len(directions):
        raise WeightsError(f"{path}: directions {directions} must be a non-empty subset of {sorted(DIRECTIONS)}, "
                           "each once")
    try:
        flat = load_file(str(path))
    except Exception as err:  # SafetensorError for truncated or malformed data
        raise WeightsError(f"{path}: cannot read tensors: {err}") from err
    broken = [key for key, tensor in flat.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if broken:
        raise WeightsError(f"{path}: {len(broken)} tensors hold NaN or infinite values (e.g. {broken[0]!r}): "
                           "the training diverged or the file is damaged")
    state_dicts = {d: {} for d in directions}
    for key, tensor in flat.items():
        direction, _, name = key.partition(".")
        if direction not in state_dicts:
            raise WeightsError(f"{path}: tensor {key!r} belongs to no listed direction {directions}")
        state_dicts[direction][name] = tensor
    reference = CondNet(config)
    for direction, state in state_dicts.items():
        try:
            reference.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"{path}: {direction} tensors do not match the header's architecture: {err}") from err
    logger.info("loaded CondNet weights %s (sha256 %s..., directions %s)", path, sha256[:12], directions)
    return CondNetWeights(header, state_dicts, path, sha256, entry["id"] if entry else None)


#: What a table name in a weights header may be: it becomes part of output file names.
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: Model grid sizes (voxels per side) a weights file may hold.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 1024


def check_table_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless the conductivity tables' names are distinct and made of letters, digits, '_'
    and '-': they name the output files (``<out>_<table>.nii.gz``)."""
    names = list(names)
    bad = [name for name in names if not _TABLE_NAME.fullmatch(name)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"table names {names} must be distinct and made of letters, digits, '_' and '-' (they "
                         "name output files)")


def _check_inputs(spec: dict, in_channels: int, path: Path) -> None:
    """Raise unless the header's ``input`` is what :func:`CondNetLogic.inference.predict_conductivity` feeds:
    T1 (then T2) in this order, on a 1 mm grid of ``size`` voxels per side."""
    channels, expected = spec.get("channels"), ["t1", "t2"][:in_channels]
    if not isinstance(channels, list) or [str(c).lower() for c in channels] != expected:
        raise WeightsError(f"{path}: the networks take the inputs {channels!r}; this package feeds {expected} "
                           f"(U={in_channels}) in that order")
    size = spec.get("size", 256)
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise WeightsError(f"{path}: input size must be a whole number of voxels ({MIN_INPUT_SIZE}-{MAX_INPUT_SIZE}), "
                           f"got {size!r}")
    spacing = spec.get("spacing_mm", 1.0)
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or spacing != 1.0:
        raise WeightsError(f"{path}: the networks were trained on a {spacing!r} mm grid; this package runs them "
                           "on 1 mm grids")


def manifest_relative_path(path: PathLike, manifest_path: Optional[PathLike] = None) -> Path:
    """``path`` relative to the folder of the manifest (``Resources/`` by default), as the manifest records it.

    Raises
    ------
    ValueError
        If ``path`` does not lie below that folder: shipped weights travel with ``Resources/``.
    """
    folder = _manifest_path(manifest_path).parent
    try:
        return Path(path).resolve().relative_to(folder.resolve())
    except ValueError as err:
        raise ValueError(f"{path} must lie below {folder} to be listed in its manifest: write the weights there "
                         f"(e.g. {folder / 'weights' / 'my-weights.safetensors'})") from err


def register_weights(
    path: PathLike,
    *,
    weights_id: str,
    version: str,
    manifest_path: Optional[PathLike] = None,
    make_default: Optional[bool] = None,
) -> dict:
    """Add (or replace) a manifest entry for a weights file below the manifest's folder.

    Returns the new entry.  The file must load as valid CondNet weights first.  With ``make_default``,
    T1 + T2 weights become the manifest's ``default`` and T1-only weights its ``default_t1_only`` (what
    :func:`default_weights_id` picks when no T2 is given).  None (the default) makes them the default when they
    predict Table A, what ``condnet predict`` gives without ``--table``; weights for other tables are only
    listed, and chosen when their table is asked for (``load_weights(tables=...)``).

    Raises
    ------
    ValueError
        If the file is not inside the manifest's folder (shipped weights travel with ``Resources/``).
    WeightsError
        If the file is not valid CondNet weights.
    """
    manifest_path = _manifest_path(manifest_path)
    path = Path(path).resolve()
    weights = load_weights(path)
    relative = manifest_relative_path(path, manifest_path)
    manifest = read_manifest(manifest_path) if manifest_path.exists() else {"format_version": 1, "weights": []}
    entry = {"id": weights_id, "version": version, "file": relative.as_posix(), "sha256": file_sha256(path),
             "size": path.stat().st_size}
    manifest["weights"] = [e for e in manifest["weights"] if e.get("id") != weights_id] + [entry]
    if make_default is None:
        make_default = "A" in [table.name for table in weights.tables]
    if make_default:
        manifest[DEFAULT_KEYS[weights.config.in_channels == 1]] = weights_id
    manifest.setdefault("default", None)
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n", overwrite=True)
    return entry
