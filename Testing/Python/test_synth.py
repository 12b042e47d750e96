"""Tests of the MRI synthesis (CondNetLogic.synth) and ``condnet synth``."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.conductivity import TISSUE_INDEX, TISSUES, labels_to_tissues, read_label_mapping, resource_path
from CondNetLogic.errors import Cancelled
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.synth import (
    DEFAULT_PRIORS,
    SynthOptions,
    deform_labels,
    load_priors,
    save_preview,
    synthesize_pair,
    synthesize_subject,
)
from CondNetLogic.volume import Volume

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SYNTHSEG = resource_path("tissue_maps", "synthseg_labels.csv")
#: voxel -> RAS with axes L, I, A (the SynthSeg maps' orientation), 1 mm.
LIA = np.array([[-1.0, 0, 0, 90.0], [0, 0, 1.0, -110.0], [0, -1.0, 0, 75.0], [0, 0, 0, 1]])


def blocks(size: int = 8) -> np.ndarray:
    """Tissue map: every tissue (and air) as a cube of ``size`` voxels, so blur barely mixes them."""
    tissues = np.zeros((4 * size, 4 * size, size), dtype=np.uint8)
    for index in range(len(TISSUES)):
        i, j = divmod(index, 4)
        tissues[i * size:(i + 1) * size, j * size:(j + 1) * size, :] = index
    return np.pad(tissues, 4)


def first_label_per_tissue() -> dict:
    """One SynthSeg label per tissue index, to build label maps the shipped mapping knows."""
    mapping = read_label_mapping(SYNTHSEG)
    labels = {}
    for label, tissue in sorted(mapping.items()):
        labels.setdefault(tissue, label)
    return labels


def as_labels(tissues: np.ndarray) -> np.ndarray:
    lookup = first_label_per_tissue()
    table = np.array([lookup[t] for t in range(len(TISSUES))], dtype=np.int32)
    return table[tissues]


@pytest.fixture(scope="module")
def label_volume():
    return Volume(as_labels(blocks()), LIA)


def tissue_means(image, tissues):
    return {name: float(image[tissues == index].mean()) for index, name in enumerate(TISSUES)}


def test_priors_file_is_valid():
    priors = load_priors()
    assert priors.t1_mean.shape == (len(TISSUES),)
    data = json.loads(DEFAULT_PRIORS.read_text())
    assert data["sources"]
    assert set(data["tissues"]) == set(TISSUES)
    # The nominal contrasts themselves follow the documented ordering.
    t1 = dict(zip(TISSUES, priors.t1_mean))
    t2 = dict(zip(TISSUES, priors.t2_mean))
    assert t1["fat"] > t1["wm"] > t1["gm"] > t1["csf"] > t1["cortical_bone"]
    assert t2["csf"] > t2["gm"] > t2["wm"] > t2["cortical_bone"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["tissues"].pop("gm"), "missing"),
        (lambda d: d["tissues"].update(bone={"t1": {"mean": 0.1, "sd": 0.1}, "t2": {"mean": 0.1, "sd": 0.1}}),
         "unknown"),
        (lambda d: d["tissues"]["wm"]["t1"].update(mean=1.5), r"wm\.t1\.mean"),
        (lambda d: d["tissues"]["wm"]["t2"].update(sd=-0.1), r"wm\.t2\.sd"),
        (lambda d: d["tissues"]["csf"].pop("t2"), r"csf\.t2"),
        (lambda d: d["tissues"]["muscle"].update(fat_fraction=1.5), r"muscle\.fat_fraction"),
        (lambda d: d["tissues"]["csf"].update(texture_scale=-1.0), r"csf\.texture_scale"),
        (lambda d: d.pop("tissues"), "tissues"),
    ],
)
def test_malformed_priors(tmp_path, edit, match):
    data = json.loads(DEFAULT_PRIORS.read_text())
    edit(data)
    path = tmp_path / "priors.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        load_priors(path)


def test_priors_not_json(tmp_path):
    path = tmp_path / "priors.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_priors(path)


def test_options_presets_and_round_trip():
    for options in (SynthOptions.mild(), SynthOptions.randomised(), SynthOptions.preset("mild")):
        assert SynthOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    with pytest.raises(ValueError, match="preset"):
        SynthOptions.preset("wild")
    with pytest.raises(ValueError, match="unknown SynthOptions fields"):
        SynthOptions.from_dict({"noise": 0.1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blur_mm": (1.0, 0.5)}, "blur_mm"),
        ({"noise_sd": (0.0,)}, "noise_sd"),
        ({"thick_slice_prob": 1.5}, "thick_slice_prob"),
        ({"contrast_spread": -1.0}, "contrast_spread"),
        ({"bias_grid": 1}, "bias_grid"),
        ({"deformation_mm": (3.0, 1.0)}, "deformation_mm"),
        ({"deformation_mm": (0.0, 11.0)}, "deformation_mm"),
        ({"deformation_grid": 1}, "deformation_grid"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthOptions(**kwargs)


def test_whole_float_grid_sizes_become_ints():
    """4.0 (e.g. from a JSON options file) is accepted as 4 and used as 4, not a float shape later."""
    options = SynthOptions(bias_grid=4.0, deformation_grid=6.0)
    assert (options.bias_grid, options.deformation_grid) == (4, 6)
    assert isinstance(options.bias_grid, int)
    assert isinstance(options.deformation_grid, int)


def test_deterministic_by_seed():
    tissues = blocks()
    first = synthesize_pair(tissues, rng=np.random.default_rng(5))
    second = synthesize_pair(tissues, rng=np.random.default_rng(5))
    other = synthesize_pair(tissues, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_output_types_and_params():
    tissues = blocks()
    t1, t2, params = synthesize_pair(tissues, rng=np.random.default_rng(0), labels=as_labels(tissues))
    for image in (t1, t2):
        assert image.dtype == np.float32
        assert image.shape == tissues.shape
        assert image.min() >= 0.0
        assert image.max() <= 1.0
    json.dumps(params)  # replay record is JSON-ready
    assert set(params["t1_means"]) == set(TISSUES)
    assert {"blur_mm", "thick_slices", "bias_sd", "noise_sd", "gamma"} <= set(params["t1"])


@pytest.mark.parametrize("seed", range(4))
def test_brain_contrast_ordering_randomised(seed):
    """Drawn means keep WM > GM > CSF (T1w) and the reverse (T2w); without a bias field the images do too.

    (With a bias field, blocks far apart can swap when two drawn means are close, as in real scans.)
    """
    tissues = blocks()
    _, _, params = synthesize_pair(tissues, rng=np.random.default_rng(seed), options=SynthOptions.randomised())
    t1_means, t2_means = params["t1_means"], params["t2_means"]
    assert t1_means["wm"] >= t1_means["gm"] >= t1_means["csf"]
    assert t2_means["csf"] >= t2_means["gm"] >= t2_means["wm"]
    no_bias = dataclasses.replace(SynthOptions.randomised(), bias_sd=(0.0, 0.0), label_offset_sd=0.0)
    t1, t2, params = synthesize_pair(tissues, rng=np.random.default_rng(seed), options=no_bias)
    m1, m2 = tissue_means(t1, tissues), tissue_means(t2, tissues)
    d1, d2 = params["t1_means"], params["t2_means"]
    # Image means follow the drawn order wherever the drawn gap exceeds the texture/noise level.
    for image_means, drawn, order in ((m1, d1, ("wm", "gm", "csf")), (m2, d2, ("csf", "gm", "wm"))):
        for brighter, darker in zip(order, order[1:]):
            if drawn[brighter] - drawn[darker] > 0.02:
                assert image_means[brighter] > image_means[darker]


@pytest.mark.parametrize("seed", range(6))
def test_air_gets_no_label_offset(seed):
    """Air carries no signal: per-label offsets shift tissues only, so without noise the air stays 0.

    (Seed 6 of a training-set build once drew a +0.08 offset for label 0, giving the whole background a grey
    level that the head mask then could not tell from the head.)
    """
    tissues = blocks()
    options = dataclasses.replace(SynthOptions.randomised(), label_offset_sd=0.2, noise_sd=(0.0, 0.0),
                                  blur_mm=(0.0, 0.0), thick_slice_prob=0.0, misregistration_mm=0.0)
    t1, t2, params = synthesize_pair(tissues, rng=np.random.default_rng(seed), options=options,
                                     labels=as_labels(tissues))
    air_label = str(first_label_per_tissue()[TISSUE_INDEX["air"]])
    assert params["t1_label_offsets"][air_label] == params["t2_label_offsets"][air_label] == 0.0
    assert np.std(list(params["t1_label_offsets"].values())) > 0.05
    for image in (t1, t2):
        assert np.all(image[tissues == TISSUE_INDEX["air"]] == 0.0)
        assert image[tissues != TISSUE_INDEX["air"]].max() > 0.5


def test_contrast_mild():
    tissues = blocks()
    t1, t2, _ = synthesize_pair(tissues, rng=np.random.default_rng(1), options=SynthOptions.mild())
    m1, m2 = tissue_means(t1, tissues), tissue_means(t2, tissues)
    assert m1["fat"] > m1["wm"]
    assert m1["fat"] > m1["muscle"]
    assert m2["fat"] > m2["muscle"]
    assert m2["fat"] > m2["wm"]
    assert m2["vitreous_humor"] > m2["gm"]
    assert m1["vitreous_humor"] < m1["gm"]
    for means in (m1, m2):
        assert means["cortical_bone"] < 0.15
        assert means["air"] < 0.05


def test_thick_slices_smooth_along_their_axis():
    tissues = blocks()
    options = SynthOptions(thick_slice_prob=1.0, slice_thickness_mm=(4.0, 4.0), blur_mm=(0.0, 0.0),
                           noise_sd=(0.05, 0.05), misregistration_mm=0.0)
    t1, _, params = synthesize_pair(tissues, rng=np.random.default_rng(2), options=options)
    axis = params["t1"]["thick_slices"]["axis"]
    roughness = [float(np.mean(np.diff(t1, axis=a) ** 2)) for a in range(3)]
    others = [r for a, r in enumerate(roughness) if a != axis]
    assert roughness[axis] < 0.5 * min(others)


def test_misregistration_recorded_and_bounded():
    tissues = blocks()
    _, _, params = synthesize_pair(tissues, rng=np.random.default_rng(3), options=SynthOptions(misregistration_mm=2.0))
    assert 0.0 < np.linalg.norm(params["t2_shift_mm"]) <= 2.0
    _, _, params = synthesize_pair(tissues, rng=np.random.default_rng(3), options=SynthOptions.mild())
    assert params["t2_shift_mm"] == [0.0, 0.0, 0.0]


def quiet_options(**changes) -> SynthOptions:
    """Every random step off (nominal means, no texture, blur, slices, shift, bias, noise or gamma) but ``changes``."""
    quiet = {"contrast_spread": 0.0, "label_offset_sd": 0.0, "texture_sd": (0.0, 0.0), "blur_mm": (0.0, 0.0),
             "thick_slice_prob": 0.0, "misregistration_mm": 0.0, "bias_sd": (0.0, 0.0), "noise_sd": (0.0, 0.0),
             "gamma_sd": 0.0}
    return SynthOptions(**{**quiet, **changes})


def priors_without_fat(**changes):
    """The shipped priors without the random fat mixture (which draws a field whose size depends on the spacing)."""
    return dataclasses.replace(load_priors(), fat_fraction=np.zeros(len(TISSUES)), **changes)


def test_misregistration_moves_the_t2_only():
    """The drawn shift is applied to the T2w image and never to the T1w image."""
    tissues, priors = blocks(), priors_without_fat()
    still = synthesize_pair(tissues, rng=np.random.default_rng(3), options=quiet_options(), priors=priors)
    moved = synthesize_pair(tissues, rng=np.random.default_rng(3), options=quiet_options(misregistration_mm=3.0),
                            priors=priors)
    assert np.linalg.norm(moved[2]["t2_shift_mm"]) > 0.5
    np.testing.assert_array_equal(moved[0], still[0])
    assert np.abs(moved[1] - still[1]).max() > 0.1


def test_each_contrast_draws_its_means_with_its_own_prior_sd():
    """T1w means spread by the T1 sds and T2w means by the T2 sds: a contrast with sd 0 keeps its nominal means."""
    tissues = blocks()
    zero = np.zeros(len(TISSUES))
    for contrast, other in (("t1", "t2"), ("t2", "t1")):
        priors = priors_without_fat(**{f"{contrast}_sd": zero})
        _, _, params = synthesize_pair(tissues, rng=np.random.default_rng(0),
                                       options=quiet_options(contrast_spread=1.5), priors=priors)
        nominal = dict(zip(TISSUES, getattr(priors, f"{contrast}_mean")), air=0.0)
        assert params[f"{contrast}_means"] == pytest.approx(nominal, abs=1e-6)
        assert params[f"{other}_means"] != pytest.approx(dict(zip(TISSUES, getattr(priors, f"{other}_mean"))), abs=1e-3)


def test_blur_is_set_in_mm_not_voxels():
    """A 2 mm PSF on 2 mm voxels blurs as a 1 mm PSF on 1 mm voxels (the same image in voxels)."""
    tissues, priors = blocks(), priors_without_fat()
    fine, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), spacing_mm=1.0,
                                 options=quiet_options(blur_mm=(1.0, 1.0)), priors=priors)
    coarse, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), spacing_mm=2.0,
                                   options=quiet_options(blur_mm=(2.0, 2.0)), priors=priors)
    np.testing.assert_allclose(coarse, fine, atol=1e-6)
    sharp, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), spacing_mm=2.0,
                                  options=quiet_options(blur_mm=(1.0, 1.0)), priors=priors)
    assert np.abs(sharp - fine).max() > 0.05


def test_bias_field_is_smooth_and_multiplicative():
    """The log ratio of a biased to an unbiased image varies slowly from voxel to voxel and leaves air at 0."""
    tissues, priors = blocks(), priors_without_fat()
    plain, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), options=quiet_options(), priors=priors)
    biased, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0),
                                   options=quiet_options(bias_sd=(1.0, 1.0)), priors=priors)
    head = tissues != TISSUE_INDEX["air"]
    assert np.all(biased[~head] == 0.0)
    inside = (plain > 0.05) & (biased > 0.05) & (biased < 1.0)  # away from the clipping at 1
    log_ratio = np.where(inside, np.log(np.where(inside, biased, 1.0) / np.where(inside, plain, 1.0)), np.nan)
    spread = np.nanmax(log_ratio) - np.nanmin(log_ratio)
    assert spread > 0.2
    steps = [np.nanmax(np.abs(np.diff(log_ratio, axis=axis))) for axis in range(3)]
    assert max(steps) < 0.25 * spread  # 0.08 here; a field with steps between its control points: 0.5 and more


def test_noise_is_rician():
    """Noise is the magnitude of a complex signal: on air (no signal) it is Rayleigh, positive with mean/sd 1.91."""
    tissues = blocks()
    t1, _, params = synthesize_pair(tissues, rng=np.random.default_rng(0),
                                    options=quiet_options(noise_sd=(0.05, 0.05)), priors=priors_without_fat())
    air = t1[tissues == TISSUE_INDEX["air"]].astype(np.float64)
    assert np.count_nonzero(air == 0.0) < 0.001 * air.size
    assert air.mean() / air.std() == pytest.approx(np.sqrt(np.pi / 2) / np.sqrt(2 - np.pi / 2), rel=0.1)
    assert air.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2) / params["t1"]["scale"], rel=0.1)


def test_label_offsets_are_drawn_per_contrast():
    """T1w and T2w images draw their per-label offsets independently."""
    tissues = blocks()
    _, _, params = synthesize_pair(tissues, rng=np.random.default_rng(0), labels=as_labels(tissues),
                                   options=quiet_options(label_offset_sd=0.1), priors=priors_without_fat())
    air = str(first_label_per_tissue()[TISSUE_INDEX["air"]])
    t1 = {label: v for label, v in params["t1_label_offsets"].items() if label != air}
    t2 = {label: v for label, v in params["t2_label_offsets"].items() if label != air}
    assert t1.keys() == t2.keys()
    assert all(t1[label] != t2[label] for label in t1)


def test_mixed_tissue_blends_towards_fat():
    """A tissue with a fat fraction (SynthSeg's muscle/fat label) lies between its own and fat's intensity; no other
    tissue changes."""
    tissues = blocks()
    pure, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), options=quiet_options(),
                                 priors=priors_without_fat())
    mixed, _, params = synthesize_pair(tissues, rng=np.random.default_rng(0), options=quiet_options(),
                                       priors=load_priors())
    most = params["fat_fraction_max"]["muscle"]
    assert most > 0.2
    muscle, fat = tissues == TISSUE_INDEX["muscle"], tissues == TISSUE_INDEX["fat"]
    np.testing.assert_array_equal(mixed[~muscle], pure[~muscle])
    low, high = pure[muscle].max(), pure[fat].min()
    assert low < high
    assert np.all((mixed[muscle] >= low - 1e-6) & (mixed[muscle] <= high + 1e-6))
    assert mixed[muscle].mean() > low + 0.2 * most * (high - low)


def test_texture_field_depends_on_the_seed():
    """The texture comes from the caller's generator: two seeds give two textures, one seed the same one."""
    tissues, options = blocks(), quiet_options(texture_sd=(0.05, 0.05))
    first, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), options=options, priors=priors_without_fat())
    again, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(0), options=options, priors=priors_without_fat())
    other, _, _ = synthesize_pair(tissues, rng=np.random.default_rng(1), options=options, priors=priors_without_fat())
    np.testing.assert_array_equal(first, again)
    wm = tissues == TISSUE_INDEX["wm"]
    assert np.corrcoef(first[wm], other[wm])[0, 1] < 0.5


@pytest.mark.parametrize(
    ("tissues", "kwargs", "error", "match"),
    [
        (blocks().astype(np.float32), {}, TypeError, "integer"),
        (np.zeros((8, 8, 8), np.uint8), {}, ValueError, "empty"),
        (np.full((8, 8, 8), 14, np.uint8), {}, ValueError, "0..13"),
        (np.ones((8, 8), np.uint8), {}, ValueError, "3D"),
        (blocks(), {"labels": np.zeros((3, 3, 3), np.int32)}, ValueError, "labels shape"),
        (blocks(), {"labels": np.zeros((3, 3, 3), np.int32), "options": SynthOptions.mild()}, ValueError,
         "labels shape"),  # no label offsets drawn: the shape is checked all the same
        (blocks(), {"spacing_mm": 0.0}, ValueError, "spacing_mm"),
    ],
)
def test_synthesize_pair_bad_input(tissues, kwargs, error, match):
    with pytest.raises(error, match=match):
        synthesize_pair(tissues, rng=np.random.default_rng(0), **kwargs)


def test_synthesize_pair_needs_generator():
    with pytest.raises(TypeError, match="Generator"):
        synthesize_pair(blocks(), rng=0)


def test_subject_layout_and_geometry(tmp_path, label_volume):
    mapping = read_label_mapping(SYNTHSEG)
    calls = []
    folders = synthesize_subject(
        label_volume, mapping, n=2, seed=7, out_dir=tmp_path, prefix="head",
        progress=lambda fraction, message: calls.append(fraction),
    )
    assert [f.name for f in folders] == ["head_p0", "head_p1"]
    assert calls[0] == 0.0
    assert calls[-1] == 1.0
    expected_tissues = labels_to_tissues(label_volume.array, mapping)
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == [
            "params.json", "preview.png", "t1.nii.gz", "t2.nii.gz", "tissues.nii.gz"
        ]
        for name in ("t1.nii.gz", "t2.nii.gz", "tissues.nii.gz"):
            volume = read_volume(folder / name)
            np.testing.assert_allclose(volume.ijk_to_ras, LIA, atol=1e-5)
            assert volume.shape == label_volume.shape
        tissues = read_volume(folder / "tissues.nii.gz").array
        assert tissues.dtype == np.uint8
        np.testing.assert_array_equal(tissues, expected_tissues)
        t1 = read_volume(folder / "t1.nii.gz").array
        assert t1.dtype == np.uint16
        assert t1.max() <= 4095
        params = json.loads((folder / "params.json").read_text())
        assert params["seed"][0] == 7
        assert (folder / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Same seed, same images (through the files); the two pairs differ from each other.
    again = synthesize_subject(label_volume, mapping, n=1, seed=7, out_dir=tmp_path / "again", prefix="head",
                               preview=False)
    np.testing.assert_array_equal(read_volume(again[0] / "t1.nii.gz").array,
                                  read_volume(folders[0] / "t1.nii.gz").array)
    assert not np.array_equal(read_volume(folders[0] / "t2.nii.gz").array,
                              read_volume(folders[1] / "t2.nii.gz").array)


def test_deform_labels_moves_voxels_by_the_requested_sd():
    shape = (48, 40, 36)
    index = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)  # each voxel's label says where it came from
    warped, params = deform_labels(index, np.random.default_rng(0), sd_mm=1.5, grid=6, spacing_mm=1.0)
    source = np.stack(np.unravel_index(warped, shape))
    target = np.stack(np.indices(shape))
    displacement = (source - target)[:, 6:-6, 6:-6, 6:-6]  # away from the edges, where labels repeat
    assert set(np.unique(warped)) <= set(index.ravel())
    assert displacement.std(axis=(1, 2, 3)) == pytest.approx([1.5] * 3, rel=0.2)
    assert np.abs(displacement).max() <= params["max_displacement_mm"] + 1  # nearest neighbour rounds by <= 0.5
    assert params["sd_mm"] == 1.5
    # Smooth: neighbouring voxels move alike (a fold would need a jump of a whole voxel-distance).
    assert np.abs(np.diff(displacement, axis=1)).mean() < 0.3
    again, _ = deform_labels(index, np.random.default_rng(0), sd_mm=1.5, grid=6)
    np.testing.assert_array_equal(again, warped)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    unchanged, params = deform_labels(index, rng, sd_mm=0.0)
    assert unchanged is index
    assert params["max_displacement_mm"] == 0.0
    assert rng.bit_generator.state == state  # no draw when off


def test_deform_labels_sd_is_in_mm_on_coarse_voxels():
    """On 2 mm voxels a 3 mm sd moves labels as a 1.5 mm sd does on 1 mm voxels (same voxels), reported in mm."""
    index = np.arange(24 * 20 * 16, dtype=np.int32).reshape(24, 20, 16)
    fine, fine_params = deform_labels(index, np.random.default_rng(0), sd_mm=1.5, grid=5, spacing_mm=1.0)
    coarse, coarse_params = deform_labels(index, np.random.default_rng(0), sd_mm=3.0, grid=5, spacing_mm=2.0)
    assert np.count_nonzero(fine != index) > 0.5 * index.size
    np.testing.assert_array_equal(coarse, fine)
    assert coarse_params["max_displacement_mm"] == pytest.approx(2.0 * fine_params["max_displacement_mm"])


def test_subject_without_deformation_is_the_pair_of_its_seed(tmp_path, label_volume):
    """Default options draw nothing extra, so training sets made before the option existed are reproduced."""
    mapping = read_label_mapping(SYNTHSEG)
    folder = synthesize_subject(label_volume, mapping, n=1, seed=4, out_dir=tmp_path, prefix="head",
                                preview=False, seed_key=(2,))[0]
    t1, _, _ = synthesize_pair(labels_to_tissues(label_volume.array, mapping), rng=np.random.default_rng([4, 2, 0]),
                               labels=label_volume.array)
    np.testing.assert_array_equal(read_volume(folder / "t1.nii.gz").array, np.rint(np.clip(t1, 0, 1) * 4095))
    assert json.loads((folder / "params.json").read_text())["deformation"] is None


def test_subject_deformation_moves_images_and_tissues_together(tmp_path, label_volume):
    mapping = read_label_mapping(SYNTHSEG)
    options = dataclasses.replace(SynthOptions.mild(), deformation_mm=(2.0, 2.0), deformation_grid=4)
    folder = synthesize_subject(label_volume, mapping, n=1, seed=5, out_dir=tmp_path, prefix="head",
                                preview=False, options=options)[0]
    written = read_volume(folder / "tissues.nii.gz").array
    original = labels_to_tissues(label_volume.array, mapping)
    assert np.count_nonzero(written != original) > 0.02 * written.size
    assert set(np.unique(written)) <= set(np.unique(original))
    params = json.loads((folder / "params.json").read_text())
    assert params["deformation"]["sd_mm"] == 2.0
    assert params["deformation"]["max_displacement_mm"] > 2.0

    t1 = read_volume(folder / "t1.nii.gz").array.astype(float)

    def within_tissue_variance(tissues):
        return sum(t1[tissues == t].var() * np.count_nonzero(tissues == t) for t in np.unique(tissues)) / t1.size

    # The image follows the written (deformed) tissue map, not the original one.
    assert within_tissue_variance(written) < 0.5 * within_tissue_variance(original)


def test_cli_synth_deformation(tmp_path, label_volume):
    labels_path = write_volume(label_volume, tmp_path / "training_seg_05.nii.gz")
    out = tmp_path / "out"
    assert main(["synth", "--labels", str(labels_path), "--out", str(out), "--n", "1", "--seed", "3",
                 "--no-preview", "--deformation-mm", "1", "2"]) == 0
    params = json.loads((out / "seg05_p0" / "params.json").read_text())
    assert 1.0 <= params["deformation"]["sd_mm"] <= 2.0
    assert params["options"]["deformation_mm"] == [1.0, 2.0]


def test_cli_synth_blur(tmp_path, label_volume, capsys):
    labels_path = write_volume(label_volume, tmp_path / "training_seg_05.nii.gz")
    assert main(["synth", "--labels", str(labels_path), "--out", str(tmp_path / "out"), "--n", "2", "--seed", "3",
                 "--no-preview", "--blur-mm", "2.5", "3.0"]) == 0
    for pair in ("seg05_p0", "seg05_p1"):
        params = json.loads((tmp_path / "out" / pair / "params.json").read_text())
        assert params["options"]["blur_mm"] == [2.5, 3.0]
        assert all(2.5 <= image["blur_mm"] <= 3.0 for image in (params["t1"], params["t2"]))
    assert main(["synth", "--labels", str(labels_path), "--out", str(tmp_path / "bad"), "--n", "1",
                 "--blur-mm", "3", "1"]) != 0
    assert "blur_mm" in capsys.readouterr().err


def test_subject_refuses_to_overwrite(tmp_path, label_volume):
    mapping = read_label_mapping(SYNTHSEG)
    (tmp_path / "head_p1").mkdir()
    (tmp_path / "head_p1" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="head_p1"):
        synthesize_subject(label_volume, mapping, n=2, seed=0, out_dir=tmp_path, prefix="head")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_p1"]
    assert (tmp_path / "head_p1" / "mine.txt").read_text() == "keep me"


def test_a_stopped_synthesis_leaves_nothing_behind(tmp_path, label_volume, monkeypatch):
    """Interrupted while writing the second pair: the pairs written so far go, an empty folder given stays, and the
    same call then runs."""
    from CondNetLogic import io

    mapping = read_label_mapping(SYNTHSEG)
    (tmp_path / "head_p0").mkdir()  # an empty folder may be given
    write, written = io.write_volume, []

    def interrupted(volume, path, **kwargs):
        if len(written) == 4:  # pair 0 complete (three volumes), one volume of pair 1
            raise KeyboardInterrupt
        written.append(path)
        return write(volume, path, **kwargs)

    monkeypatch.setattr(io, "write_volume", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthesize_subject(label_volume, mapping, n=2, seed=0, out_dir=tmp_path, prefix="head", preview=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_p0"]
    assert not list((tmp_path / "head_p0").iterdir())
    monkeypatch.undo()
    folders = synthesize_subject(label_volume, mapping, n=2, seed=0, out_dir=tmp_path, prefix="head", preview=False)
    assert all((folder / "t2.nii.gz").is_file() for folder in folders)


def test_subject_unmapped_label(tmp_path, label_volume):
    array = label_volume.array.copy()
    array[5, 5, 5] = 999
    with pytest.raises(ValueError, match="999"):
        synthesize_subject(label_volume.with_array(array), read_label_mapping(SYNTHSEG), n=1, seed=0,
                           out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_subject_empty_map(tmp_path):
    empty = Volume(np.zeros((10, 10, 10), np.int32), np.eye(4))
    with pytest.raises(ValueError, match="empty"):
        synthesize_subject(empty, read_label_mapping(SYNTHSEG), n=1, seed=0, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_subject_non_integer_labels(tmp_path, label_volume):
    array = label_volume.array.astype(np.float32)
    array[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        synthesize_subject(label_volume.with_array(array), read_label_mapping(SYNTHSEG), n=1, seed=0,
                           out_dir=tmp_path / "out")


def test_subject_float_labels_accepted(tmp_path, label_volume):
    """Some SynthSeg maps are stored as float32 holding whole numbers."""
    floats = label_volume.with_array(label_volume.array.astype(np.float32))
    folders = synthesize_subject(floats, read_label_mapping(SYNTHSEG), n=1, seed=0, out_dir=tmp_path,
                                 preview=False)
    assert read_volume(folders[0] / "tissues.nii.gz").array.any()


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 2.0)])
def test_subject_resamples_non_1mm_with_nearest(tmp_path, label_volume, spacing):
    mapping = read_label_mapping(SYNTHSEG)
    coarse = Volume.from_geometry(label_volume.array, spacing=spacing, origin=(5.0, -3.0, 2.0),
                                  direction=LIA[:3, :3])
    folders = synthesize_subject(coarse, mapping, n=1, seed=0, out_dir=tmp_path, preview=False)
    tissues = read_volume(folders[0] / "tissues.nii.gz")
    np.testing.assert_allclose(tissues.spacing, 1.0, atol=1e-5)
    np.testing.assert_allclose(tissues.direction, LIA[:3, :3], atol=1e-6)
    expected_shape = tuple(int(n * s) for n, s in zip(label_volume.shape, spacing))
    assert tissues.shape == expected_shape
    # Nearest neighbour: no tissue appears that was not in the input, none is lost.
    assert set(np.unique(tissues.array)) == set(np.unique(labels_to_tissues(coarse.array, mapping)))
    params = json.loads((folders[0] / "params.json").read_text())
    assert params["resampled_from_spacing_mm"] == list(spacing)


def test_subject_cancel(tmp_path, label_volume):
    with pytest.raises(Cancelled):
        synthesize_subject(label_volume, read_label_mapping(SYNTHSEG), n=2, seed=0, out_dir=tmp_path,
                           cancel=lambda: True)


def test_subject_bad_n(tmp_path, label_volume):
    with pytest.raises(ValueError, match="n must be"):
        synthesize_subject(label_volume, read_label_mapping(SYNTHSEG), n=0, seed=0, out_dir=tmp_path)


def test_preview_refuses_existing(tmp_path):
    path = tmp_path / "preview.png"
    path.write_bytes(b"mine")
    volume = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(FileExistsError):
        save_preview(path, volume, volume, volume)
    assert path.read_bytes() == b"mine"


def test_cli_synth_takes_the_seed(tmp_path, label_volume):
    labels_path = write_volume(label_volume, tmp_path / "training_seg_05.nii.gz")
    for seed in ("3", "4"):
        assert main(["synth", "--labels", str(labels_path), "--out", str(tmp_path / seed), "--n", "1", "--seed", seed,
                     "--no-preview"]) == 0
    params = [json.loads((tmp_path / seed / "seg05_p0" / "params.json").read_text()) for seed in ("3", "4")]
    assert [p["seed"][0] for p in params] == [3, 4]
    t1 = [read_volume(tmp_path / seed / "seg05_p0" / "t1.nii.gz").array for seed in ("3", "4")]
    assert not np.array_equal(*t1)


def test_cli_synth(tmp_path, label_volume, capsys):
    labels_path = write_volume(label_volume, tmp_path / "training_seg_05.nii.gz")
    out = tmp_path / "out"
    assert main(["synth", "--labels", str(labels_path), "--out", str(out), "--n", "1", "--seed", "3",
                 "--no-preview"]) == 0
    assert sorted(p.name for p in (out / "seg05_p0").iterdir()) == [
        "params.json", "t1.nii.gz", "t2.nii.gz", "tissues.nii.gz"
    ]
    assert main(["synth", "--labels", str(labels_path), "--out", str(out), "--n", "1", "--seed", "3"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_synth_malformed_mapping(tmp_path, label_volume, capsys):
    labels_path = write_volume(label_volume, tmp_path / "labels.nii.gz")
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("label,name\n0,air\n")
    assert main(["synth", "--labels", str(labels_path), "--out", str(tmp_path / "out"),
                 "--mapping", str(mapping)]) == 2
    assert "'label' and 'tissue' columns" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


REAL = {
    "mni152": ("mni152/MNI152_T1_2mm.nii.gz", "mni152/MNI152_T2_2mm.nii.gz"),
    "colin27": ("colin27/colin27_t1_1mm.nii.gz", None),
}


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "synthseg_label_maps").is_dir(), reason="needs ../shared data")
def test_priors_cover_real_scans():
    """The real scans' per-tissue means (as the network sees them) lie inside the synthetic range.

    Both are scaled with the network's own input normalisation (z-score, 0.5/99.5 percentiles of the
    head -> [0, 1]); tissue groups follow SAMSEG, which lumps skin/fat/muscle and both bones.
    """
    from CondNetLogic.preprocessing import zscore_unit

    groups = {
        "wm": ["wm"], "gm": ["gm"], "csf": ["csf"], "cerebellum": ["cerebellum"],
        "vitreous_humor": ["vitreous_humor"], "soft": ["skin", "fat", "muscle"],
        "bone": ["cortical_bone", "cancellous_bone"],
    }
    samseg_groups = dict(groups, soft=["muscle"], bone=["cortical_bone"])
    samseg = read_label_mapping(resource_path("tissue_maps", "samseg_labels.csv"))
    real = {}
    for name, (t1_path, t2_path) in REAL.items():
        seg = read_volume(SHARED / "data" / name / "samseg" / "seg.nii.gz")
        tissues = labels_to_tissues(seg.array, samseg)
        for contrast, path in (("t1", t1_path), ("t2", t2_path)):
            if path is None:
                continue
            image = zscore_unit(read_volume(SHARED / "data" / path).array, tissues > 0)
            for group, members in samseg_groups.items():
                mask = np.isin(tissues, [TISSUE_INDEX[m] for m in members])
                real[(name, contrast, group)] = float(image[mask].mean())

    labels = read_volume(SHARED / "data" / "synthseg_label_maps" / "training_seg_03.nii.gz").array
    labels = np.rint(labels).astype(np.int32)[::2, ::2, ::2]
    box = np.argwhere(labels > 0)
    labels = np.ascontiguousarray(labels[tuple(slice(lo, hi + 1) for lo, hi in zip(box.min(0), box.max(0)))])
    tissues = labels_to_tissues(labels, read_label_mapping(SYNTHSEG))
    synthetic = {}
    for seed in range(16):
        t1, t2, _ = synthesize_pair(tissues, rng=np.random.default_rng(seed), spacing_mm=2.0, labels=labels)
        for contrast, image in (("t1", t1), ("t2", t2)):
            image = zscore_unit(image, tissues > 0)
            for group, members in groups.items():
                mask = np.isin(tissues, [TISSUE_INDEX[m] for m in members])
                synthetic.setdefault((contrast, group), []).append(float(image[mask].mean()))
    outside = []
    for (name, contrast, group), value in real.items():
        low, high = min(synthetic[(contrast, group)]), max(synthetic[(contrast, group)])
        if not low <= value <= high:
            outside.append(f"{name} {contrast} {group}: real {value:.3f} not in [{low:.3f}, {high:.3f}]")
    assert not outside, "\n".join(outside)
