import os

import numpy as np
import pytest
import tensorflow as tf
from data_files import (
    write_adult,
    write_cifar10,
    write_dbpedia,
    write_fruits,
    write_idx,
    write_isic,
    write_mnist,
)

from proto_tf.data import MissingDataError, adult, load_dataset
from proto_tf.data.adult import NUM_FEATURES
from proto_tf.data.tabular import TabularFeatures
from proto_tf.data.text import ALPHABET, CharacterQuantizer
from proto_tf.errors import DataError

REPO_ADULT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "adult")


def test_adult_known_rows_give_exact_feature_vectors(tmp_path):
    data = load_dataset("adult", write_adult(str(tmp_path)), validation_fraction=0)
    assert data.train.inputs.shape == (200, NUM_FEATURES) == (200, 105)
    assert len(data.test) == 60 and data.num_classes == 2
    first, third = data.train.inputs[0], data.train.inputs[2]
    # Row 1: age 39, fnlwgt 77516, education-num 13, gain 2174, loss 0, hours 40.
    np.testing.assert_allclose(
        first[:6],
        [(39 - 50) / 30, (np.log(77516) - 9) / 3, (13 - 6) / 6, (np.log1p(2174) - 5) / 5, -1.0, -0.2],
        rtol=1e-6,
    )
    categorical = first[6:]
    # Blocks: workclass 8, education 16, marital 7, occupation 14, relationship 6,
    # race 5, sex 2, country 41 -> one 1 per block at the value's vocabulary position.
    expected_hot = [6 + 5, 6 + 8 + 0, 6 + 24 + 2, 6 + 31 + 8, 6 + 45 + 3, 6 + 51 + 0, 6 + 56 + 1, 6 + 58 + 0]
    np.testing.assert_array_equal(np.flatnonzero(first), [0, 1, 2, 3, 4, 5] + expected_hot)
    assert categorical.sum() == 8
    # Row 3 has '?' for workclass, occupation and country: those blocks are all zero.
    assert third[6:14].sum() == 0 and third[37:51].sum() == 0 and third[64:].sum() == 0
    assert third[6:].sum() == 5
    np.testing.assert_array_equal(data.train.labels[:4], [0, 1, 0, 1])
    np.testing.assert_array_equal(data.test.labels[:4], [0, 1, 0, 1])  # Trailing '.' handled.


def test_adult_features_layer_rejects_missing_columns():
    with pytest.raises(ValueError, match="Missing columns: age"):
        TabularFeatures(adult.SCHEMA)({"sex": tf.constant(["Male"])})


def test_real_adult_files():
    data = load_dataset("adult", REPO_ADULT, validation_fraction=0)
    assert len(data.train) == 32561 and len(data.test) == 16281
    assert data.train.labels.mean() == pytest.approx(0.2408, abs=1e-4)
    assert data.test.labels.mean() == pytest.approx(0.2362, abs=1e-4)


def test_missing_files_error_names_files_url_and_flag(tmp_path):
    with pytest.raises(MissingDataError) as error:
        load_dataset("adult", str(tmp_path))
    message = str(error.value)
    assert "adult.data" in message and "archive.ics.uci.edu" in message and "--data_dir" in message
    with pytest.raises(MissingDataError, match="dbpedia_csv"):
        load_dataset("dbpedia", str(tmp_path))
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10, fruits, isic, dbpedia, adult"):
        load_dataset("imagenet")


def test_mnist_idx_files_round_trip(tmp_path):
    arrays = write_mnist(str(tmp_path))
    data = load_dataset("fashion_mnist", str(tmp_path), validation_fraction=0)
    np.testing.assert_array_equal(data.train.inputs[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(data.test.labels, arrays["t10k"][1])
    assert data.train.inputs.shape == (120, 28, 28, 1) and data.num_classes == 10


def test_corrupt_idx_file_is_reported(tmp_path):
    write_mnist(str(tmp_path))
    path = str(tmp_path / "train-images-idx3-ubyte.gz")
    write_idx(path, np.zeros([5, 28, 28], np.uint8))
    with open(path, "rb") as handle:
        content = handle.read()
    import gzip

    raw = gzip.decompress(content)[:-100]
    with gzip.open(path, "wb") as handle:
        handle.write(raw)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("mnist", str(tmp_path))


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_batches(tmp_path, binary):
    data_bytes, labels = write_cifar10(str(tmp_path), binary=binary)
    data = load_dataset("cifar10", str(tmp_path), validation_fraction=0)
    assert data.train.inputs.shape == (100, 32, 32, 3) and len(data.test) == 20
    # Channel-major rows: the first 1024 bytes are the red plane.
    np.testing.assert_array_equal(data.train.inputs[0, :, :, 0], data_bytes[0, :1024].reshape(32, 32))
    np.testing.assert_array_equal(data.train.labels[:20], labels)


def test_mnist_from_tfds_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = load_dataset("mnist", "/nonexistent-idx-dir", validation_fraction=0.25)
    assert data.train.inputs.shape == (9, 28, 28, 1) and len(data.validation) == 3
    assert data.train.inputs.dtype == np.uint8


def test_fruits_and_isic_folders(tmp_path):
    fruits = load_dataset("fruits", write_fruits(str(tmp_path / "fruits")), validation_fraction=0)
    assert fruits.train.inputs.shape == (18, 100, 100, 3)
    assert fruits.class_names == ("Apple", "Banana", "Cherry") and fruits.num_classes == 3
    np.testing.assert_array_equal(np.bincount(fruits.test.labels), [6, 6, 6])
    isic = load_dataset("isic", write_isic(str(tmp_path / "isic")), validation_fraction=0)
    assert isic.train.inputs.shape == (20, 128, 128, 3)
    np.testing.assert_array_equal(isic.train.labels[:5], [1, 0, 0, 0, 1])


def test_dbpedia_codes_of_a_known_string(tmp_path):
    codes = CharacterQuantizer()(tf.constant(["Ab c\n\u00e9{", "x" * 500])).numpy()
    assert len(ALPHABET) == 69
    # a=1, b=2, space -> 0, c=3, newline=69, e-acute -> 0 (not in the alphabet), '{' = 67
    # (the alphabet ends ...()[]{}, newline: '{' is the 67th character).
    np.testing.assert_array_equal(codes[0, :7], [1, 2, 0, 3, 69, 0, 67])
    assert (codes[0, 7:] == 0).all()
    assert codes.shape == (2, 448) and (codes[1] == ALPHABET.index("x") + 1).all()
    data = load_dataset("dbpedia", write_dbpedia(str(tmp_path)), validation_fraction=0)
    assert data.train.inputs.shape == (70, 448) and data.num_classes == 14
    assert data.train.labels[13] == 13
    title = "title 0 content of class 1, row 0. caf"
    np.testing.assert_array_equal(
        data.train.inputs[0, : len(title)], [ALPHABET.index(c) + 1 if c in ALPHABET else 0 for c in title]
    )
