"""Helpers shared by the CondNet ML tests: a tiny synthetic training set on disk (phantoms, 64^3 voxels)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from CondNetLogic.io import write_volume
from CondNetLogic.phantom import make_head_phantom

#: Phantom grid (1 mm, RAS) and the model grid size used by the tests.
PHANTOM_SHAPE = (64, 64, 64)
MODEL_SIZE = 64


def write_training_set(root: Path, *, train=(1, 2), val=(3,)) -> Path:
    """Write phantom subjects ``s<seed>`` and ``split.json`` below ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for seed in (*train, *val):
        phantom = make_head_phantom(PHANTOM_SHAPE, seed=seed)
        folder = root / f"s{seed}"
        folder.mkdir()
        write_volume(phantom.t1, folder / "t1.nii.gz")
        write_volume(phantom.t2, folder / "t2.nii.gz")
        write_volume(phantom.tissues.with_array(phantom.tissues.array.astype(np.uint8)), folder / "tissues.nii.gz")
        (folder / "params.json").write_text(json.dumps({"seed": seed}))
    split = {"train": [f"s{s}" for s in train], "val": [f"s{s}" for s in val], "seed": 0, "source": "phantom"}
    (root / "split.json").write_text(json.dumps(split))
    return root


def set_nifti_space(path: Path, code: int) -> None:
    """Mark a NIfTI file as lying in space ``code`` (qform and sform codes; 4 = MNI152), through nibabel."""
    import nibabel as nib

    image = nib.load(str(path))
    marked = nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header)
    marked.set_qform(image.affine, code=code)
    marked.set_sform(image.affine, code=code)
    nib.save(marked, str(path))


def nifti_space(path: Path) -> tuple:
    """``(qform_code, sform_code)`` of a NIfTI file, read by nibabel."""
    import nibabel as nib

    header = nib.load(str(path)).header
    return int(header["qform_code"]), int(header["sform_code"])
