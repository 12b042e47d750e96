"""Table I, label mappings and the Eq. 3 normalisation."""
import json

import numpy as np
import pytest

from CondNetLogic.conductivity import (
    TABLE_A,
    TABLE_B,
    TISSUE_INDEX,
    TISSUES,
    ConductivityTable,
    denormalise,
    get_table,
    labels_to_tissues,
    load_table,
    normalise,
    read_label_mapping,
    resource_path,
    tissues_to_conductivity,
)

PAPER_TABLE_I = {  # tissue: (A, B) in S/m, transcribed from the paper's Table I
    "blood": (0.70, 0.70), "cancellous_bone": (0.08, 0.025), "cortical_bone": (0.02, 0.007),
    "cerebellum": (0.13, 0.276), "csf": (2.0, 1.654), "dura": (0.5, 0.5), "fat": (0.04, 0.04),
    "gm": (0.10, 0.276), "mucous": (0.07, 0.07), "muscle": (0.34, 0.40), "skin": (0.10, 0.456),
    "vitreous_humor": (1.5, 1.5), "wm": (0.07, 0.126),
}


def test_tables_match_paper():
    for tissue, (a, b) in PAPER_TABLE_I.items():
        assert TABLE_A.values[tissue] == a
        assert TABLE_B.values[tissue] == b
    assert set(TABLE_A.values) == set(TISSUES)
    assert TABLE_A.sigma_max == 2.0
    assert TABLE_B.sigma_max == 1.654


def test_normalise_inverts_eq3():
    sigma = np.array([0.0, 0.07, 2.0, 1.5], dtype=np.float32)
    level = normalise(sigma, TABLE_A.sigma_max, 0.1)
    assert level.max() == pytest.approx(0.9)
    np.testing.assert_allclose(denormalise(level, TABLE_A.sigma_max, 0.1), sigma, rtol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        normalise(sigma, 2.0, 1.0)


def test_shipped_mappings_cover_the_shared_label_maps():
    synthseg = read_label_mapping(resource_path("tissue_maps", "synthseg_labels.csv"))
    samseg = read_label_mapping(resource_path("tissue_maps", "samseg_labels.csv"))
    assert synthseg[0] == TISSUE_INDEX["air"]
    assert synthseg[511] == TISSUE_INDEX["skin"]
    assert samseg[259] == TISSUE_INDEX["vitreous_humor"]


#: (words in a structure's name, the tissue it must map to): the first match decides.
_NAME_RULES = (("cerebellum", "cerebellum"), ("ventricle", "csf"), ("cerebral white matter", "wm"),
               ("cerebral cortex", "gm"), ("thalamus", "gm"), ("hippocampus", "gm"))


@pytest.mark.parametrize("name", ["synthseg_labels.csv", "samseg_labels.csv"])
def test_shipped_mappings_send_each_named_structure_to_its_tissue(name):
    """Each row by the name it gives its structure; and the FreeSurfer labels both files hold map alike."""
    import csv

    with open(resource_path("tissue_maps", name), newline="") as handle:
        rows = list(csv.DictReader(handle))
    checked = 0
    for row in rows:
        for words, tissue in _NAME_RULES:
            if words in row["structure"].lower():
                assert row["tissue"] == tissue, row
                checked += 1
                break
    assert checked >= 14, checked  # left and right of each rule at least
    synthseg = read_label_mapping(resource_path("tissue_maps", "synthseg_labels.csv"))
    samseg = read_label_mapping(resource_path("tissue_maps", "samseg_labels.csv"))
    brain = [label for label in synthseg if 0 < label < 100 and label in samseg]
    assert len(brain) >= 25
    assert {label: synthseg[label] for label in brain} == {label: samseg[label] for label in brain}


def test_a_tissue_index_beyond_the_tissues_is_refused_by_name():
    with pytest.raises(ValueError, match=f"tissue index {len(TISSUES)} out of range"):
        tissues_to_conductivity(np.array([0, len(TISSUES)]), TABLE_A)
    with pytest.raises(ValueError, match="tissue index -1 out of range"):  # not the last tissue's value
        tissues_to_conductivity(np.array([-1, 2]), TABLE_A)


def test_labels_to_conductivity_including_float_labels():
    mapping = {0: 0, 2: TISSUE_INDEX["wm"], 24: TISSUE_INDEX["csf"]}
    labels = np.array([[[0, 2], [24, 2]]], dtype=np.float32)
    tissues = labels_to_tissues(labels, mapping)
    assert tissues.dtype == np.uint8
    sigma = tissues_to_conductivity(tissues, TABLE_B)
    np.testing.assert_allclose(sigma, [[[0.0, 0.126], [1.654, 0.126]]], rtol=1e-6)
    assert sigma.dtype == np.float32


def test_unmapped_label_is_named():
    with pytest.raises(ValueError, match=r"\[99\]"):
        labels_to_tissues(np.array([0, 99]), {0: 0})
    with pytest.raises(ValueError, match=r"^500 labels are not .* \(the first: \[1, 2, .*intensity image"):
        labels_to_tissues(np.arange(501), {0: 0})
    with pytest.raises(ValueError, match="non-integer"):
        labels_to_tissues(np.array([0.5]), {0: 0})


def test_table_lacking_a_tissue_is_an_error_not_zero():
    partial = ConductivityTable("partial", {"wm": 0.1})
    with pytest.raises(ValueError, match="gm"):
        tissues_to_conductivity(np.array([TISSUE_INDEX["wm"], TISSUE_INDEX["gm"]]), partial)
    with pytest.raises(ValueError, match="no tissue has a positive conductivity"):
        ConductivityTable("zeros", {"wm": 0.0, "gm": 0.0})


def test_user_tables_json_and_csv(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"name": "mine", "values": {"gm": 0.2, "wm": 0.1}}))
    table = load_table(tmp_path / "t.json")
    assert table.name == "mine"
    assert table.values["gm"] == 0.2
    (tmp_path / "flat.json").write_text(json.dumps({"csf": 1.8}))
    assert load_table(tmp_path / "flat.json").values["csf"] == 1.8
    (tmp_path / "t.csv").write_text("tissue,conductivity\ngm,0.3\nskin,0.4\n")
    assert get_table(tmp_path / "t.csv").values["skin"] == 0.4
    assert get_table("b") is TABLE_B
    assert ConductivityTable.from_dict(TABLE_A.to_dict()).values == TABLE_A.values


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        ('{"gm": -1}', ".json", ">= 0"),
        ('{"grey": 0.1}', ".json", "unknown tissue"),
        ("{not json", ".json", "malformed"),
        ("name,value\ngm,0.1\n", ".csv", "needs 'conductivity' and 'tissue' columns"),
        ("tissue,conductivity\ngm,0.3\nwm,0.1\ngm,5\n", ".csv", r"bad.csv:4: tissue 'gm' is given twice"),
        ('{"gm": 0.3, "gm": 5}', ".json", "bad.json: gm given twice"),
        ("tissue,conductivity\ngm,\n", ".csv", r"bad.csv:2: conductivity '' of 'gm' is not a number"),
        ("tissue,conductivity\ngrey,0.1\n", ".csv", "bad.csv: table 'bad': unknown tissue 'grey'"),
    ],
)
def test_bad_user_tables(tmp_path, content, suffix, match):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_table(path)


def test_spreadsheet_csv_variants_are_read(tmp_path):
    """Excel's "CSV UTF-8" (a byte-order mark), spaces around names and values, and empty rows (",")."""
    (tmp_path / "map.csv").write_bytes("\ufefflabel , tissue\n0, air\n 2 ,wm\n,\n\n".encode())
    assert read_label_mapping(tmp_path / "map.csv") == {0: TISSUE_INDEX["air"], 2: TISSUE_INDEX["wm"]}
    (tmp_path / "table.csv").write_bytes("\ufefftissue,conductivity\r\ngm , 0.3\r\n,\r\n".encode())
    assert load_table(tmp_path / "table.csv").values["gm"] == 0.3
    (tmp_path / "table.json").write_bytes('\ufeff{"gm": 0.3}'.encode())
    assert load_table(tmp_path / "table.json").values["gm"] == 0.3


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("lab,tis\n0,air\n", "columns"),
        ("label,tissue\nx,air\n", "not an integer"),
        ("label,tissue\n0,bone\n", "unknown tissue"),
        ("label,tissue\n0,air\n0,wm\n", "twice"),
        ("label,tissue\n", "empty"),
    ],
)
def test_malformed_label_mapping(tmp_path, content, match):
    path = tmp_path / "map.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_label_mapping(path)
