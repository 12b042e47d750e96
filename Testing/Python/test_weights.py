"""Tests for CondNetLogic.weights: safetensors round trip, header checks, manifest verification."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from CondNetLogic.conductivity import TABLE_A, TABLE_B
from CondNetLogic.errors import WeightsError
from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.weights import (
    default_weights_id,
    file_sha256,
    installed_weights,
    load_weights,
    read_manifest,
    register_weights,
    save_weights,
)

CONFIG = CondNetConfig(depth=3)
INPUT = {"channels": ["t1", "t2"], "size": 32, "spacing_mm": 1.0, "normalisation": "zscore_unit"}


def states(config=CONFIG, directions=("axial", "sagittal", "coronal")):
    out = {}
    for n, direction in enumerate(directions):
        torch.manual_seed(n)
        out[direction] = CondNet(config).state_dict()
    return out


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, states(), config=CONFIG, tables=[TABLE_A], tau=0.1, input_spec=INPUT,
                 training={"seed": 3, "epochs": 2})
    return path


def test_round_trip_keeps_tensors_and_header(weights_file):
    loaded = load_weights(weights_file)
    assert loaded.config == CONFIG
    assert loaded.directions == ("sagittal", "coronal", "axial")
    assert [t.name for t in loaded.tables] == ["A"]
    assert loaded.tau == 0.1
    assert loaded.header["training"] == {"seed": 3, "epochs": 2}
    assert loaded.sha256 == file_sha256(weights_file)
    original = states()
    for direction in loaded.directions:
        model = loaded.build(direction)
        assert not model.training
        for key, tensor in model.state_dict().items():
            torch.testing.assert_close(tensor, original[direction][key], rtol=0, atol=0)


def test_save_refuses_to_overwrite_and_bad_arguments(weights_file, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        save_weights(weights_file, states(), config=CONFIG, tables=[TABLE_A], tau=0.1, input_spec=INPUT,
                     training={})
    kwargs = {"config": CONFIG, "tau": 0.1, "input_spec": INPUT, "training": {}}
    with pytest.raises(ValueError, match="1 output tracks but 2 tables"):
        save_weights(tmp_path / "a.safetensors", states(), tables=[TABLE_A, TABLE_B], **kwargs)
    with pytest.raises(ValueError, match="directions must be"):
        save_weights(tmp_path / "b.safetensors", {"oblique": states()["axial"]}, tables=[TABLE_A], **kwargs)
    with pytest.raises(ValueError, match="does not match the config"):
        save_weights(tmp_path / "c.safetensors", states(CondNetConfig(depth=4)), tables=[TABLE_A], **kwargs)



def _failing_write(write):
    """A replacement for a writer: ``write(*args)`` writes part of the file, then it fails as on a full disk."""
    def fail(*args, **kwargs):
        write(*args)
        raise OSError(28, "No space left on device")
    return fail


def test_failed_save_changes_nothing_and_leaves_no_temporary_file(weights_file, tmp_path, monkeypatch):
    import safetensors.torch

    before = weights_file.read_bytes()
    partial = _failing_write(lambda tensors, filename: Path(filename).write_bytes(b"partial"))
    monkeypatch.setattr(safetensors.torch, "save_file", partial)
    kwargs = {"config": CONFIG, "tables": [TABLE_A], "tau": 0.2, "input_spec": INPUT, "training": {}}
    with pytest.raises(OSError, match="No space left"):
        save_weights(weights_file, states(directions=("axial",)), overwrite=True, **kwargs)
    with pytest.raises(OSError, match="No space left"):
        save_weights(tmp_path / "new.safetensors", states(), **kwargs)
    assert weights_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_missing_and_corrupt_files_raise_weights_error(weights_file, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nothing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights_file.read_bytes()[:1000])
    with pytest.raises(WeightsError):
        load_weights(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(garbage)


def _rewrite_header(source, target, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = json.loads(handle.metadata()["condnet"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    edit(header, tensors)
    save_file(tensors, str(target), metadata={"condnet": json.dumps(header)})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h, t: h.update(format_version=99), "format version 99 is not supported"),
        (lambda h, t: h.update(format="other"), "header format"),
        (lambda h, t: h["config"].update(decoder_features=[16, 32]), "do not match the header.s architecture"),
        (lambda h, t: h["config"].update(depth=4), "invalid architecture"),
        (lambda h, t: h["tables"].append(TABLE_B.to_dict()), "2 tables for 1 output tracks"),
        (lambda h, t: h["input"].update(channels=["t1"]), r"inputs \['t1'\]; this package feeds \['t1', 't2'\]"),
        (lambda h, t: h["input"].update(channels=["t2", "t1"]), r"inputs \['t2', 't1'\]"),
        (lambda h, t: h["input"].update(channels=5), "inputs 5"),
        (lambda h, t: h["input"].update(size="big"), "input size must be a whole number"),
        (lambda h, t: h["input"].update(spacing_mm=2.0), "trained on a 2.0 mm grid"),
        (lambda h, t: h["tables"][0].update(name="../escaped"), "table names .* must be distinct and made of"),
        (lambda h, t: h.update(directions=["axial", "axial", "sagittal", "coronal"]), "each once"),
        (lambda h, t: t["axial.decoder_1.level_1.map.bias"].fill_(float("nan")), "1 tensors hold NaN or infinite"),
        (lambda h, t: t.pop("axial.decoder_1.level_1.map.bias"), "axial tensors do not match"),
        (lambda h, t: h.pop("tau"), "header lacks"),
        (lambda h, t: h.update(tau=1.0), r"tau must be a number in \[0, 1\), got 1.0"),
        (lambda h, t: h.update(tau=-0.1), r"tau must be a number in \[0, 1\), got -0.1"),
        (lambda h, t: h.update(tau=float("nan")), "tau must be a number"),
        (lambda h, t: h.update(input=["t1", "t2"]), "'input' must be an object"),
        (lambda h, t: h.update(directions="axial"), "directions must be a list"),
    ],
)
def test_mismatched_header_raises(weights_file, tmp_path, edit, message):
    target = tmp_path / "edited.safetensors"
    _rewrite_header(weights_file, target, edit)
    with pytest.raises(WeightsError, match=message):
        load_weights(target)


def test_tensors_of_an_unlisted_direction_are_refused(weights_file, tmp_path):
    """A file whose header lists fewer directions than its tensors hold is inconsistent, not silently trimmed."""
    target = tmp_path / "edited.safetensors"
    _rewrite_header(weights_file, target, lambda h, t: h.update(directions=["axial"]))
    with pytest.raises(WeightsError, match=r"tensor '(sagittal|coronal)\..*' belongs to no listed direction"):
        load_weights(target)


def test_load_refuses_a_file_and_an_id_together(weights_file):
    """A weights file and a manifest id are two different choices: passing both is an error, not one ignored."""
    with pytest.raises(ValueError, match="either a weights file or a weights_id"):
        load_weights(weights_file, weights_id="tiny")


def test_file_without_condnet_header(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="no CondNet header"):
        load_weights(path)
    save_file({"x": torch.zeros(2)}, str(path), metadata={"condnet": "[1, 2]"})
    with pytest.raises(WeightsError, match="CondNet header is a JSON list, expected an object"):
        load_weights(path)


def test_manifest_default_absent_hash_verified(weights_file, tmp_path):
    manifest = tmp_path / "weights.json"
    manifest.write_text(json.dumps({"format_version": 1, "default": None, "weights": []}))
    with pytest.raises(WeightsError, match="no default CondNet weights are installed"):
        load_weights(manifest_path=manifest)
    with pytest.raises(ValueError, match="must lie below"):
        register_weights(weights_file, weights_id="x", version="1", manifest_path=tmp_path / "sub" / "weights.json")
    shipped = tmp_path / "weights" / "tiny.safetensors"
    shipped.parent.mkdir()
    shipped.write_bytes(weights_file.read_bytes())
    entry = register_weights(shipped, weights_id="tiny", version="1", manifest_path=manifest)
    assert entry["file"] == "weights/tiny.safetensors"
    assert entry["size"] == shipped.stat().st_size
    assert read_manifest(manifest)["default"] == "tiny"
    loaded = load_weights(manifest_path=manifest)
    assert loaded.weights_id == "tiny"
    assert loaded.describe()["id"] == "tiny"
    with pytest.raises(WeightsError, match="'other' is not in"):
        load_weights(weights_id="other", manifest_path=manifest)
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 0xFF  # flip one bit in the last tensor: same size, different hash
    shipped.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the manifest entry 'tiny'"):
        load_weights(manifest_path=manifest)
    shipped.unlink()
    with pytest.raises(WeightsError, match="is missing"):
        load_weights(manifest_path=manifest)



def test_failed_manifest_write_keeps_the_manifest_and_leaves_no_temporary_file(weights_file, tmp_path, monkeypatch):
    manifest = tmp_path / "weights.json"
    register_weights(weights_file, weights_id="first", version="1", manifest_path=manifest)
    before = manifest.read_bytes()
    files = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(Path, "write_text", _failing_write(lambda target, text: Path.write_bytes(target, b'{"form')))
    with pytest.raises(OSError, match="No space left"):
        register_weights(weights_file, weights_id="second", version="1", manifest_path=manifest)
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_t1_only_weights_are_the_default_without_a_t2(tmp_path):
    manifest = tmp_path / "weights.json"
    folder = tmp_path / "weights"
    folder.mkdir()
    t1_only = CondNetConfig(depth=3, in_channels=1)
    save_weights(folder / "t1.safetensors", states(t1_only), config=t1_only, tables=[TABLE_A], tau=0.1,
                 input_spec={**INPUT, "channels": ["t1"]}, training={})
    register_weights(folder / "t1.safetensors", weights_id="t1", version="1", manifest_path=manifest)
    assert read_manifest(manifest)["default"] is None
    assert read_manifest(manifest)["default_t1_only"] == "t1"
    assert default_weights_id(True, manifest) == "t1"  # the only weights there are
    save_weights(folder / "t1t2.safetensors", states(), config=CONFIG, tables=[TABLE_A], tau=0.1,
                 input_spec=INPUT, training={})
    register_weights(folder / "t1t2.safetensors", weights_id="t1t2", version="1", manifest_path=manifest)
    assert default_weights_id(True, manifest) == "t1t2"
    assert default_weights_id(False, manifest) == "t1"
    assert load_weights(weights_id=default_weights_id(False, manifest), manifest_path=manifest).config == t1_only


def test_weights_are_chosen_by_the_table_they_predict(tmp_path):
    """Asked for Table B, the default (Table A) is passed over for the listed weights that predict B."""
    manifest = tmp_path / "weights.json"
    folder = tmp_path / "weights"
    folder.mkdir()
    t1_only = CondNetConfig(depth=3, in_channels=1)
    two = CondNetConfig(depth=3, out_channels=2)
    files = {  # id: (config, tables, input channels, make_default: None = if they predict Table A)
        "t1t2-A": (CONFIG, [TABLE_A], ["t1", "t2"], None),
        "t1-A": (t1_only, [TABLE_A], ["t1"], None),
        "t1t2-B": (CONFIG, [TABLE_B], ["t1", "t2"], None),
        "t1-B": (t1_only, [TABLE_B], ["t1"], None),
        "t1t2-AB": (two, [TABLE_A, TABLE_B], ["t1", "t2"], False),
    }
    for weights_id, (config, tables, channels, default) in files.items():
        path = folder / f"{weights_id}.safetensors"
        save_weights(path, states(config), config=config, tables=tables, tau=0.1,
                     input_spec={**INPUT, "channels": channels}, training={})
        register_weights(path, weights_id=weights_id, version="1", manifest_path=manifest, make_default=default)
    assert (read_manifest(manifest)["default"], read_manifest(manifest)["default_t1_only"]) == ("t1t2-A", "t1-A")
    assert default_weights_id(True, manifest, tables=["A"]) == "t1t2-A"
    assert default_weights_id(False, manifest, tables=None) == "t1-A"
    assert default_weights_id(True, manifest, tables=["B"]) == "t1t2-B"
    assert default_weights_id(False, manifest, tables=["B"]) == "t1-B"  # T1 + T2 weights cannot run without a T2
    assert default_weights_id(True, manifest, tables=["A", "B"]) == "t1t2-AB"
    loaded = load_weights(manifest_path=manifest, t2_given=False, tables=["B"])
    assert (loaded.weights_id, [t.name for t in loaded.tables]) == ("t1-B", ["B"])
    with pytest.raises(WeightsError, match=r"no installed CondNet weights predict table mine from a T1 alone; "
                                           r"installed: t1t2-A \(T1 \+ T2: table A\); t1-A \(T1: table A\); "):
        default_weights_id(False, manifest, tables=["mine"])
    with pytest.raises(WeightsError, match="predict table A, not B"):  # an explicit file is checked too
        load_weights(folder / "t1t2-A.safetensors", tables=["B"])
    with pytest.raises(WeightsError, match="predict table A and B from a T1 alone"):  # T1 + T2 weights need a T2
        default_weights_id(False, manifest, tables=["A", "B"])
    (folder / "t1t2-B.safetensors").unlink()  # a missing file is skipped while choosing
    assert default_weights_id(True, manifest, tables=["B"]) == "t1t2-AB"
    (folder / "t1-B.safetensors").unlink()
    with pytest.raises(WeightsError, match="predict table B from a T1 alone"):
        default_weights_id(False, manifest, tables=["B"])
    assert installed_weights(manifest) == {"t1t2-A": (["t1", "t2"], ["A"]), "t1-A": (["t1"], ["A"]),
                                           "t1t2-AB": (["t1", "t2"], ["A", "B"])}


def test_shipped_manifest_is_valid():
    manifest = read_manifest()
    assert "default" in manifest
    ids = [entry["id"] for entry in manifest["weights"]]
    assert manifest["default"] is None or manifest["default"] in ids
    assert manifest.get("default_t1_only") is None or manifest["default_t1_only"] in ids
    for entry in manifest["weights"]:  # every listed file loads, with the kind its default key says
        weights = load_weights(weights_id=entry["id"])
        if entry["id"] == manifest.get("default_t1_only"):
            assert weights.config.in_channels == 1
        if entry["id"] == manifest["default"]:
            assert weights.config.in_channels == 2
