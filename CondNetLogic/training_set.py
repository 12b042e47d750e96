"""Build a CondNet training set: synthetic T1w/T2w pairs from whole-head label maps.

Layout of the output folder (read by :mod:`CondNetLogic.dataset`)::

    DIR/split.json     {"train": [ids], "val": [ids], "seed": S, "source": ..., "mapping": ...,
                        "pairs_per_map": N, "options": {...}, "maps": {"train": [...], "val": [...]}}
    DIR/<id>/t1.nii.gz, t2.nii.gz, tissues.nii.gz, params.json, preview.png

``<id>`` is ``seg01_p0`` for pair 0 of ``training_seg_01``.  The split is by subject (label map), never
by pair, so no validation head is seen in training.  The default holds out ``training_seg_17`` and
``training_seg_18`` (16 train / 2 validation maps).  ``split.json`` is written last: a folder without
it is incomplete.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import Cancelled
from .synth import SynthOptions, head_tissues, synthesize_subject

__all__ = ["DEFAULT_VAL_MAPS", "build_training_set", "map_id"]

logger = logging.getLogger(__name__)

#: Label maps held out for validation by default (subject-level split: 16 train / 2 validation).
DEFAULT_VAL_MAPS = ("training_seg_17", "training_seg_18")

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def map_id(stem: str) -> str:
    """Short id of a label-map file stem: ``training_seg_01`` -> ``seg01``; others keep their stem.

    >>> map_id("training_seg_07"), map_id("head-A")
    ('seg07', 'head-A')
    """
    match = re.fullmatch(r"training_seg_(\d+)", stem)
    return f"seg{match.group(1)}" if match else stem


def _list_maps(labels_dir: Path) -> list:
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"{labels_dir}: no such folder of label maps")
    maps = sorted(p for p in labels_dir.iterdir() if p.is_file() and p.name.lower().endswith(_SUFFIXES))
    if not maps:
        raise ValueError(f"{labels_dir}: no label maps ({', '.join(_SUFFIXES)}) found")
    ids = [map_id(_stem(p)) for p in maps]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{labels_dir}: label-map names give duplicate ids {sorted(ids)}")
    return maps


def _split(stems: Sequence[str], val_maps: Union[Sequence[str], int], seed: int) -> tuple:
    if isinstance(val_maps, (int, np.integer)) and not isinstance(val_maps, bool):
        count = int(val_maps)
        if not 0 <= count < len(stems):
            raise ValueError(f"val_maps count must be in 0..{len(stems) - 1} for {len(stems)} maps; got {count}")
        order = np.random.default_rng([int(seed), 0x5A11]).permutation(len(stems))
        val = sorted(stems[i] for i in order[:count])
    elif isinstance(val_maps, str):
        raise TypeError("val_maps must be a sequence of map names or a count, not a single string")
    else:
        val = list(val_maps)
        unknown = sorted(set(val) - set(stems))
        if unknown:
            raise ValueError(f"validation maps {unknown} are not among the label maps {list(stems)}")
        if len(set(val)) == len(stems):
            raise ValueError("every label map is in the validation set; leave some for training")
    train = [s for s in stems if s not in val]
    return train, [s for s in stems if s in val]


def _synthesize_map(task: dict) -> list:
    """Worker: read one label map and write its pairs (a top-level function so processes can run it)."""
    from .io import read_volume

    labels = read_volume(task["path"])
    try:
        folders = synthesize_subject(
            labels,
            task["mapping"],
            n=task["pairs"],
            seed=task["seed"],
            out_dir=task["out_dir"],
            prefix=task["id"],
            preview=task["preview"],
            options=SynthOptions.from_dict(task["options"]),
            seed_key=(task["index"],),
        )
    except ValueError as err:
        raise ValueError(f"{Path(task['path']).name}: {err}") from err
    return [folder.name for folder in folders]


def _check_labels(maps: Sequence[Path], mapping: Mapping[int, int]) -> None:
    """Raise ``ValueError`` naming the first map with a label the mapping lacks or no head (before any synthesis)."""
    from .io import read_volume

    for path in maps:
        try:
            head_tissues(read_volume(path).array, mapping)
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from err


def build_training_set(
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    pairs_per_map: int,
    val_maps: Union[Sequence[str], int] = DEFAULT_VAL_MAPS,
    seed: int = 0,
    options: Optional[SynthOptions] = None,
    mapping: Union[str, os.PathLike, Mapping[int, int], None] = None,
    preview: bool = True,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    workers: int = 1,
) -> Path:
    """Synthesise ``pairs_per_map`` T1w/T2w pairs from every label map of ``labels_dir``.

    Parameters
    ----------
    labels_dir : path
        Folder of label maps (``*.nii.gz``, ``*.nii``, ``*.nrrd``, ``*.mha``), e.g.
        ``../shared/data/synthseg_label_maps``.
    out_dir : path
        New or empty folder for the training set.
    pairs_per_map : int
        Synthetic pairs per label map (>= 1), for training and validation maps alike.
    val_maps : sequence of str or int
        File stems of the validation maps, or how many to draw at random (seeded).
    seed : int
        Seeds the split (when drawn) and every image: pair ``i`` of map number ``m`` (0-based, sorted by
        name) uses ``numpy.random.default_rng([seed, m, i])``.
    options : SynthOptions, optional
        Default :meth:`SynthOptions.randomised`.
    mapping : path or dict, optional
        Label-to-tissue mapping; default ``Resources/tissue_maps/synthseg_labels.csv``.
    preview : bool
        Write a ``preview.png`` per pair.
    progress : callable(fraction, message), optional
        Called after each label map.
    cancel : callable() -> bool, optional
        Checked between label maps (serial runs) or before collecting each map (parallel runs);
        raises :class:`CondNetLogic.errors.Cancelled`.
    workers : int
        Processes synthesising maps in parallel (each needs about 1 GB for a 256^3 map).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists and is not an empty folder (nothing is written).
    FileNotFoundError
        If ``labels_dir`` does not exist.
    ValueError
        No label maps, bad ``pairs_per_map``/``workers``/``seed``, unknown validation maps, a map with labels
        the mapping lacks or no head (every map is checked before any synthesis; the message names the file),
        and every error of :func:`CondNetLogic.synth.synthesize_subject` (prefixed with the file).

    Notes
    -----
    When the build fails or is cancelled (including Ctrl-C), what it wrote is removed again, leaving
    ``out_dir`` as it was (empty or absent).
    """
    from .conductivity import read_label_mapping, resource_path

    labels_dir, out_dir = Path(labels_dir), Path(out_dir)
    for name, value, low in (("pairs_per_map", pairs_per_map, 1), ("workers", workers, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new output folder")
    maps = _list_maps(labels_dir)
    stems = [_stem(p) for p in maps]
    train, val = _split(stems, val_maps, seed)
    options = SynthOptions.randomised() if options is None else options
    if mapping is None:
        mapping = resource_path("tissue_maps", "synthseg_labels.csv")
    if isinstance(mapping, Mapping):
        mapping_dict, mapping_name = dict(mapping), "in-memory mapping"
    else:
        mapping_dict, mapping_name = read_label_mapping(mapping), str(mapping)

    tasks = [
        {
            "path": str(path), "mapping": mapping_dict, "pairs": int(pairs_per_map), "seed": int(seed),
            "out_dir": str(out_dir), "id": map_id(stem), "preview": bool(preview),
            "options": options.to_dict(), "index": index,
        }
        for index, (path, stem) in enumerate(zip(maps, stems))
    ]
    _check_labels(maps, mapping_dict)
    logger.info("building %d pairs from %d maps (%d train, %d val) in %s with %d worker(s)",
                len(maps) * pairs_per_map, len(maps), len(train), len(val), out_dir, workers)
    existed = out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        _synthesize_all(tasks, workers, progress, cancel, out_dir, train, val, seed, labels_dir, mapping_name,
                        pairs_per_map, options)
    except BaseException:
        # The folder was empty or absent before this call: remove the incomplete set rather than leave a
        # folder that training refuses (no split.json) and a rerun refuses (not empty).
        for child in list(out_dir.iterdir()) if existed else [out_dir]:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        logger.warning("removed the incomplete training set in %s", out_dir)
        raise
    return out_dir


def _synthesize_all(tasks, workers, progress, cancel, out_dir: Path, train, val, seed, labels_dir: Path,
                    mapping_name: str, pairs_per_map: int, options: SynthOptions) -> None:
    """Run the map tasks (serially or in processes), then write ``split.json``."""
    pair_ids: dict = {}

    def done(task: dict, ids: list) -> None:
        pair_ids[task["id"]] = ids
        if progress is not None:
            progress(len(pair_ids) / len(tasks), f"{task['id']}: {len(ids)} pairs")

    if workers == 1:
        for task in tasks:
            if cancel is not None and cancel():
                raise Cancelled(f"training-set build cancelled after {len(pair_ids)} of {len(tasks)} maps")
            done(task, _synthesize_map(task))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # "spawn": forking a process that holds threads (BLAS, torch) can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=context) as pool:
            futures = {pool.submit(_synthesize_map, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    if cancel is not None and cancel():
                        raise Cancelled(f"training-set build cancelled after {len(pair_ids)} of {len(tasks)} maps")
                    done(futures[future], future.result())
            except BaseException:  # cancelled, a map failed, Ctrl-C: the queued maps never start
                for pending in futures:
                    pending.cancel()
                raise

    split = {
        "train": [pid for stem in train for pid in pair_ids[map_id(stem)]],
        "val": [pid for stem in val for pid in pair_ids[map_id(stem)]],
        "seed": int(seed),
        "source": str(labels_dir.resolve()),
        "mapping": mapping_name,
        "pairs_per_map": int(pairs_per_map),
        "options": options.to_dict(),
        "maps": {"train": train, "val": val},
        "note": "subject-level split: all pairs of a label map are in the same subset",
    }
    (out_dir / "split.json").write_text(json.dumps(split, indent=1))
