"""restore.inputs: what a restoration reads of a corrupted file, blind or not."""

import numpy as np
import pytest

from gmmrestore.h5io import GmmRestoreError, H5FormatError, write_h5
from gmmrestore.restore.inputs import BLIND_DATASETS, corrupted_setting, read_corrupted


@pytest.fixture
def corrupted_file(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {"clean": rng.random((2, 6, 6)), "corrupted": rng.random((2, 6, 6)),
              "kernel": np.full((3, 3), 1 / 9), "val_clean": rng.random((1, 6, 6)),
              "val_corrupted": rng.random((1, 6, 6))}
    path = tmp_path / "corrupted.h5"
    write_h5(path, "corrupted", arrays, attrs={"noise_sigma": 0.02, "blur": "box3"})
    return path, arrays


def test_a_blind_read_sees_neither_the_clean_frames_nor_the_true_kernel(corrupted_file):
    path, arrays = corrupted_file
    blind, _ = read_corrupted(path, blind=True)
    assert sorted(blind) == sorted(BLIND_DATASETS)
    np.testing.assert_array_equal(blind["corrupted"], arrays["corrupted"])
    everything, attrs = read_corrupted(path, required=("clean", "val_clean"))
    assert sorted(everything) == sorted(arrays)
    assert corrupted_setting(attrs) == {"noise_sigma": 0.02, "blur": "box3", "dataset": "",
                                        "boundary": "zero"}


def test_missing_or_non_finite_photographs_are_clear_errors(tmp_path, corrupted_file):
    path, _ = corrupted_file
    with pytest.raises(H5FormatError, match="patch_matrix"):
        read_corrupted(path, required=("patch_matrix",))
    bad = tmp_path / "nan.h5"
    write_h5(bad, "corrupted", {"corrupted": np.full((1, 4, 4), np.nan)},
             attrs={"noise_sigma": 0.01})
    for blind in (False, True):
        with pytest.raises(GmmRestoreError, match="nan.h5: dataset 'corrupted' contains NaN"):
            read_corrupted(bad, blind=blind)
    only_clean = tmp_path / "clean.h5"
    write_h5(only_clean, "corrupted", {"clean": np.zeros((1, 4, 4))}, attrs={"noise_sigma": 0})
    with pytest.raises(H5FormatError, match="corrupted"):
        read_corrupted(only_clean, blind=True)
