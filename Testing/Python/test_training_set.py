"""Tests of the training-set builder (CondNetLogic.training_set) and ``condnet build-training-set``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.conductivity import TISSUES, labels_to_tissues, read_label_mapping, resource_path
from CondNetLogic.dataset import read_split
from CondNetLogic.errors import Cancelled
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.synth import SynthOptions
from CondNetLogic.training_set import _split, build_training_set, map_id
from CondNetLogic.volume import Volume

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SYNTHSEG = resource_path("tissue_maps", "synthseg_labels.csv")
LIA = np.array([[-1.0, 0, 0, 20.0], [0, 0, 1.0, -30.0], [0, -1.0, 0, 25.0], [0, 0, 0, 1]])
FAST = SynthOptions.mild()


def phantom_labels(seed: int) -> np.ndarray:
    """A small phantom head expressed in SynthSeg labels (the first label of each tissue)."""
    first = {}
    for label, tissue in sorted(read_label_mapping(SYNTHSEG).items()):
        first.setdefault(tissue, label)
    table = np.array([first[t] for t in range(len(TISSUES))], dtype=np.int32)
    return table[make_head_phantom((48, 48, 48), seed=seed).tissues.array]


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    for index in (1, 2, 3):
        array = phantom_labels(index)
        if index == 2:
            array = array.astype(np.float32)  # some SynthSeg maps are stored as float32
        write_volume(Volume(array, LIA), folder / f"training_seg_{index:02d}.nii.gz")
    return folder


def test_map_id():
    assert map_id("training_seg_01") == "seg01"
    assert map_id("subject7") == "subject7"


def test_layout_split_and_geometry(tmp_path, labels_dir):
    out = tmp_path / "set"
    fractions = []
    build_training_set(labels_dir, out, pairs_per_map=2, val_maps=("training_seg_03",), seed=4, options=FAST,
                       progress=lambda fraction, message: fractions.append(fraction))
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == ["seg01_p0", "seg01_p1", "seg02_p0", "seg02_p1"]
    assert split["val"] == ["seg03_p0", "seg03_p1"]
    assert split["maps"] == {"train": ["training_seg_01", "training_seg_02"], "val": ["training_seg_03"]}
    assert split["seed"] == 4
    assert split["pairs_per_map"] == 2
    assert SynthOptions.from_dict(split["options"]) == FAST
    assert split["mapping"] == str(SYNTHSEG)
    assert fractions[-1] == 1.0
    assert read_split(out)["val"] == split["val"]  # the dataset module reads this layout
    mapping = read_label_mapping(SYNTHSEG)
    for pair in split["train"] + split["val"]:
        folder = out / pair
        assert sorted(p.name for p in folder.iterdir()) == [
            "params.json", "preview.png", "t1.nii.gz", "t2.nii.gz", "tissues.nii.gz"
        ]
        tissues = read_volume(folder / "tissues.nii.gz")
        np.testing.assert_allclose(tissues.ijk_to_ras, LIA, atol=1e-5)
        source = read_volume(labels_dir / f"training_seg_{pair[3:5]}.nii.gz")
        np.testing.assert_array_equal(tissues.array, labels_to_tissues(source.array, mapping))
        for name in ("t1.nii.gz", "t2.nii.gz"):
            np.testing.assert_allclose(read_volume(folder / name).ijk_to_ras, LIA, atol=1e-5)


def test_deterministic_by_seed(tmp_path, labels_dir):
    kwargs = {"pairs_per_map": 1, "val_maps": 1, "options": FAST, "preview": False}
    build_training_set(labels_dir, tmp_path / "a", seed=1, **kwargs)
    build_training_set(labels_dir, tmp_path / "b", seed=1, **kwargs)
    build_training_set(labels_dir, tmp_path / "c", seed=2, **kwargs)
    split_a = json.loads((tmp_path / "a" / "split.json").read_text())
    assert len(split_a["val"]) == 1
    assert len(split_a["train"]) == 2
    for pair in ("seg01_p0", "seg03_p0"):
        a = read_volume(tmp_path / "a" / pair / "t1.nii.gz").array
        np.testing.assert_array_equal(a, read_volume(tmp_path / "b" / pair / "t1.nii.gz").array)
        assert not np.array_equal(a, read_volume(tmp_path / "c" / pair / "t1.nii.gz").array)
    # Maps differ in their pairs even with one seed: the map number is part of the seed.
    assert json.loads((tmp_path / "a" / "seg01_p0" / "params.json").read_text())["seed"] == [1, 0, 0]
    assert json.loads((tmp_path / "a" / "seg02_p0" / "params.json").read_text())["seed"] == [1, 1, 0]


def test_validation_maps_drawn_by_count_depend_on_the_seed():
    """Seeds 0-4 draw five different halves of 20 maps (a chance match: 1 in C(20, 10) = 184756); a seed repeats."""
    stems = [f"training_seg_{n:02d}" for n in range(1, 21)]
    splits = [_split(stems, 10, seed) for seed in range(5)]
    for train, val in splits:
        assert len(val) == 10
        assert sorted(train + val) == stems
    assert len({tuple(val) for _, val in splits}) == 5
    assert _split(stems, 10, 3) == splits[3]


def test_parallel_workers_match_serial(tmp_path, labels_dir):
    kwargs = {"pairs_per_map": 1, "val_maps": ("training_seg_02",), "options": FAST, "preview": False, "seed": 0}
    build_training_set(labels_dir, tmp_path / "serial", **kwargs)
    build_training_set(labels_dir, tmp_path / "parallel", workers=2, **kwargs)
    for name in ("split.json", "seg03_p0/params.json"):
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "parallel" / name).read_text()
    np.testing.assert_array_equal(read_volume(tmp_path / "serial" / "seg03_p0" / "t2.nii.gz").array,
                                  read_volume(tmp_path / "parallel" / "seg03_p0" / "t2.nii.gz").array)


def test_refuses_non_empty_out_dir(tmp_path, labels_dir):
    out = tmp_path / "set"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        build_training_set(labels_dir, out, pairs_per_map=1, val_maps=1, options=FAST)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pairs_per_map": 0}, ValueError, "pairs_per_map"),
        ({"pairs_per_map": 1, "workers": 0}, ValueError, "workers"),
        ({"pairs_per_map": 1, "val_maps": ("training_seg_99",)}, ValueError, "training_seg_99"),
        ({"pairs_per_map": 1, "val_maps": 3}, ValueError, "val_maps count"),
        ({"pairs_per_map": 1, "val_maps": "training_seg_01"}, TypeError, "single string"),
        ({"pairs_per_map": 1, "val_maps": ("training_seg_01", "training_seg_02", "training_seg_03")}, ValueError,
         "every label map"),
    ],
)
def test_bad_arguments(tmp_path, labels_dir, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_training_set(labels_dir, tmp_path / "set", options=FAST, **kwargs)
    assert not (tmp_path / "set").exists()


def test_missing_or_empty_labels_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_training_set(tmp_path / "nowhere", tmp_path / "set", pairs_per_map=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no label maps"):
        build_training_set(tmp_path / "empty", tmp_path / "set", pairs_per_map=1)


def tiny_map() -> Volume:
    """A 6^3 SynthSeg label map: a cube of white matter (label 2) in air."""
    array = np.zeros((6, 6, 6), np.int32)
    array[2:4, 2:4, 2:4] = 2
    return Volume(array, LIA)


def test_other_files_in_the_labels_dir_are_not_maps(tmp_path):
    """Only label-map files (.nii.gz, .nii, .nrrd, .mha) are read; notes and sidecars beside them are left alone."""
    folder = tmp_path / "labels"
    write_volume(tiny_map(), folder / "training_seg_01.nii.gz")
    write_volume(tiny_map(), folder / "training_seg_02.nii.gz")
    (folder / "README.txt").write_text("label maps from SynthSeg")
    (folder / "training_seg_01.json").write_text("{}")
    build_training_set(folder, tmp_path / "set", pairs_per_map=1, val_maps=("training_seg_02",), options=FAST,
                       preview=False)
    split = json.loads((tmp_path / "set" / "split.json").read_text())
    assert split["maps"] == {"train": ["training_seg_01"], "val": ["training_seg_02"]}


def test_label_maps_with_the_same_id_are_refused_before_any_synthesis(tmp_path):
    """Two files giving one pair id (``training_seg_01.nii.gz`` and ``.nii``) are refused up front, not half-built."""
    folder = tmp_path / "labels"
    array = tiny_map().array
    write_volume(Volume(array, LIA), folder / "training_seg_01.nii.gz")
    write_volume(Volume(array, LIA), folder / "training_seg_01.nii")
    write_volume(Volume(array, LIA), folder / "training_seg_02.nii.gz")
    with pytest.raises(ValueError, match="duplicate ids"):
        build_training_set(folder, tmp_path / "set", pairs_per_map=1, val_maps=("training_seg_02",), options=FAST,
                           preview=False)
    assert not (tmp_path / "set").exists()


def test_unmapped_label_in_any_map_is_named_before_any_synthesis(tmp_path, monkeypatch):
    import CondNetLogic.training_set as training_set

    folder = tmp_path / "labels"
    array = phantom_labels(1)
    array[2, 2, 2] = 4242
    write_volume(Volume(phantom_labels(0), LIA), folder / "training_seg_01.nii.gz")
    write_volume(Volume(array, LIA), folder / "training_seg_02.nii.gz")  # the last map

    def never(task):
        raise AssertionError("synthesis started before every map was checked")

    monkeypatch.setattr(training_set, "_synthesize_map", never)
    with pytest.raises(ValueError, match=r"training_seg_02.nii.gz: labels \[4242\]"):
        build_training_set(folder, tmp_path / "set", pairs_per_map=1, val_maps=("training_seg_02",), options=FAST)
    assert not (tmp_path / "set").exists()
    write_volume(Volume(np.zeros_like(array), LIA), folder / "training_seg_02.nii.gz", overwrite=True)  # no head
    with pytest.raises(ValueError, match="training_seg_02.nii.gz: the label map is empty"):
        build_training_set(folder, tmp_path / "set", pairs_per_map=1, val_maps=("training_seg_02",), options=FAST)
    assert not (tmp_path / "set").exists()


def test_malformed_mapping(tmp_path, labels_dir):
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("label,tissue\n0,air\n2,brain\n")
    with pytest.raises(ValueError, match="unknown tissue 'brain'"):
        build_training_set(labels_dir, tmp_path / "set", pairs_per_map=1, val_maps=1, mapping=mapping)
    assert not (tmp_path / "set").exists()


def test_cancel_or_failure_leaves_the_output_folder_as_it_was(tmp_path, labels_dir):
    calls = []
    with pytest.raises(Cancelled):  # cancelled after the first map was written
        build_training_set(labels_dir, tmp_path / "set", pairs_per_map=1, val_maps=1, options=FAST,
                           cancel=lambda: calls.append(1) or len(calls) > 1)
    assert not (tmp_path / "set").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Cancelled):
        build_training_set(labels_dir, empty, pairs_per_map=1, val_maps=1, options=FAST,
                           cancel=lambda: calls.append(1) or len(calls) > 3)
    assert empty.is_dir()
    assert not any(empty.iterdir())


def test_cli_build_draws_val_count_maps(tmp_path, labels_dir):
    out = tmp_path / "set"
    assert main(["build-training-set", "--labels-dir", str(labels_dir), "--out", str(out), "--pairs-per-map", "1",
                 "--seed", "3", "--val-count", "2", "--preset", "mild", "--no-preview", "--quiet"]) == 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 2
    assert len(split["train"]) == 1


def test_cli_build_and_refuse(tmp_path, labels_dir, capsys):
    out = tmp_path / "set"
    argv = ["build-training-set", "--labels-dir", str(labels_dir), "--out", str(out), "--pairs-per-map", "1",
            "--seed", "3", "--val-maps", "training_seg_01", "--preset", "mild", "--no-preview", "--quiet"]
    assert main(argv) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["val"] == ["seg01_p0"]
    assert split["train"] == ["seg02_p0", "seg03_p0"]
    before = (out / "split.json").read_text()
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "split.json").read_text() == before
    assert split["options"]["deformation_mm"] == [0.0, 0.0]

    deformed = tmp_path / "deformed"
    assert main([*argv[:4], str(deformed), *argv[5:], "--deformation-mm", "0.5", "1.5"]) == 0
    split = json.loads((deformed / "split.json").read_text())
    assert split["options"]["deformation_mm"] == [0.5, 1.5]
    params = json.loads((deformed / "seg02_p0" / "params.json").read_text())
    assert 0.5 <= params["deformation"]["sd_mm"] <= 1.5


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data" / "synthseg_label_maps").is_dir(), reason="needs ../shared data")
def test_real_map_crop(tmp_path):
    """A 96^3 crop of a real SynthSeg map (L-I-A, float32 on disk): geometry kept, every label mapped."""
    source = read_volume(SHARED / "data" / "synthseg_label_maps" / "training_seg_01.nii.gz")
    corner = np.array([80, 60, 80])
    crop = source.array[80:176, 60:156, 80:176]
    affine = source.ijk_to_ras.copy()
    affine[:3, 3] = source.ijk_to_ras_points(corner)
    folder = tmp_path / "labels"
    write_volume(Volume(crop, affine), folder / "training_seg_01.nii.gz")
    write_volume(Volume(crop[::-1].copy(), affine), folder / "training_seg_02.nii.gz")
    build_training_set(folder, tmp_path / "set", pairs_per_map=1, val_maps=("training_seg_02",), seed=0)
    t1 = read_volume(tmp_path / "set" / "seg01_p0" / "t1.nii.gz")
    np.testing.assert_allclose(t1.ijk_to_ras, affine, atol=1e-4)
    np.testing.assert_allclose(np.abs(t1.direction), [[1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-6)  # L-I-A
    tissues = read_volume(tmp_path / "set" / "seg01_p0" / "tissues.nii.gz").array
    assert len(np.unique(tissues)) >= 8
    # White matter is brighter than CSF on the synthetic T1 of a real map too.
    wm, csf = TISSUES.index("wm"), TISSUES.index("csf")
    image = t1.array.astype(float)
    assert image[tissues == wm].mean() > image[tissues == csf].mean()
