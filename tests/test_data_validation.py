"""Every loader stops on a bad file with one message naming the file, the line (or
example) and what is valid, instead of training on garbage."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from data_files import write_adult, write_cifar10, write_dbpedia, write_fruits, write_idx, write_isic, write_mnist

from proto_tf.data import load_dataset
from proto_tf.errors import DataError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K"


def _adult_with_line(tmp_path, line, position=3):
    """Adult files whose training file has `line` as its line `position` (1-based)."""
    folder = write_adult(str(tmp_path / "adult"), train_rows=20, test_rows=8)
    path = os.path.join(folder, "adult.data")
    with open(path) as handle:
        lines = handle.read().split("\n")
    lines.insert(position - 1, line)
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return folder, path


@pytest.mark.parametrize(
    "column, value, number, rule",
    [
        ("age", "nan", 1, r"'nan' is not a number in \[0, 130\]"),
        ("fnlwgt", "inf", 3, r"'inf' is not a number in \[1, 1e\+08\]"),
        ("capital-gain", "-5", 11, r"'-5' is not a number in \[0, 1e\+07\]"),
        ("age", "abc", 1, r"'abc' is not a number in \[0, 130\]"),
        ("hours-per-week", "1e38", 13, r"'1e38' is not a number in \[0, 168\]"),
    ],
)
def test_adult_bad_number_names_file_line_column_and_range(tmp_path, column, value, number, rule):
    fields = GOOD.split(", ")
    fields[number - 1] = value
    folder, path = _adult_with_line(tmp_path, ", ".join(fields), position=3)
    with pytest.raises(DataError, match=rule) as error:
        load_dataset("adult", folder)
    assert str(error.value).startswith(f"{path}:3: column {number} ({column}): ")


def test_adult_non_utf8_bytes_name_file_and_line(tmp_path):
    folder, path = _adult_with_line(tmp_path, GOOD)
    with open(path, "ab") as handle:
        handle.write(GOOD.replace("State-gov", "St\xe4te").encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"adult\.data:23: byte 7 \(0xe4\) is not UTF-8"):
        load_dataset("adult", folder)


@pytest.mark.parametrize("name", ["adult.data", "adult.test"])
def test_empty_adult_file_is_named(tmp_path, name):
    folder = write_adult(str(tmp_path / "adult"), train_rows=20, test_rows=8)
    open(os.path.join(folder, name), "w").close()
    with pytest.raises(DataError, match=rf"{name}: no examples found; expected rows of 15"):
        load_dataset("adult", folder)


def test_adult_wrong_label_and_field_count(tmp_path):
    folder, path = _adult_with_line(tmp_path, GOOD.replace("<=50K", "maybe"))
    with pytest.raises(DataError, match=r":3: column 15 \(income\): unknown label 'maybe'; valid: <=50K, >50K"):
        load_dataset("adult", folder)
    folder, path = _adult_with_line(tmp_path, "39, State-gov", position=5)
    with pytest.raises(DataError, match=r":5: expected 15 comma-separated fields .* got 2"):
        load_dataset("adult", folder)


def test_cli_stops_on_bad_data_with_one_line(tmp_path):
    fields = GOOD.split(", ")
    fields[0] = "nan"
    folder, path = _adult_with_line(tmp_path, ", ".join(fields))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "train.py"),
            "--dataset=adult",
            "--small",
            f"--data_dir={folder}",
            f"--model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {path}:3: column 1 (age): 'nan' is not a number in [0, 130]."
    )
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_idx_header_and_size_mismatch(tmp_path):
    write_mnist(str(tmp_path))
    path = str(tmp_path / "train-labels-idx1-ubyte.gz")
    write_idx(path, np.zeros([119], np.uint8))  # One label fewer than images.
    with pytest.raises(DataError, match="has 120 images but train-labels-idx1-ubyte.gz has 119 labels"):
        load_dataset("mnist", str(tmp_path))
    write_idx(path, np.full([120], 12, np.uint8))
    with pytest.raises(DataError, match="label 12 of example 0 is outside 0..9"):
        load_dataset("mnist", str(tmp_path))
    with open(str(tmp_path / "t10k-images-idx3-ubyte.gz"), "wb") as handle:
        handle.write(b"garbage")
    write_idx(path, np.zeros([120], np.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read as gzip"):
        load_dataset("mnist", str(tmp_path))


def test_truncated_cifar_batches(tmp_path):
    write_cifar10(str(tmp_path / "py"))
    path = tmp_path / "py" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"data_batch_3: not a complete CIFAR-10 python batch"):
        load_dataset("cifar10", str(tmp_path / "py"))
    path.write_bytes(pickle.dumps({b"data": np.zeros([4, 3000], np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"data_batch_3: expected data \[N, 3072\]"):
        load_dataset("cifar10", str(tmp_path / "py"))
    # The real batches: written by Python 2 (protocol 2, with str keys read as bytes).
    path.write_bytes(pickle.dumps({b"data": np.zeros([4, 3072], np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2))
    load_dataset("cifar10", str(tmp_path / "py"))
    write_cifar10(str(tmp_path / "bin"), binary=True)
    path = tmp_path / "bin" / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"test_batch.bin: size 61450 bytes is not a positive multiple of 3073"):
        load_dataset("cifar10", str(tmp_path / "bin"))


@pytest.mark.parametrize(
    "row, message",
    [
        ('15,"Title","Content"', r"train.csv:71: expected 3 fields class \(1-14\)"),
        ('3,"Title only"', r"train.csv:71: expected 3 fields .* got 2 field\(s\)"),
    ],
)
def test_dbpedia_bad_rows(tmp_path, row, message):
    folder = write_dbpedia(str(tmp_path))
    with open(os.path.join(folder, "train.csv"), "a") as handle:
        handle.write(row + "\n")
    with pytest.raises(DataError, match=message):
        load_dataset("dbpedia", folder)


def test_dbpedia_non_utf8_and_empty(tmp_path):
    folder = write_dbpedia(str(tmp_path))
    with open(os.path.join(folder, "test.csv"), "ab") as handle:
        handle.write(b'1,"Caf\xe9","x"\n')
    with pytest.raises(DataError, match=r"test.csv:29: byte 7 \(0xe9\) is not UTF-8"):
        load_dataset("dbpedia", folder)
    open(os.path.join(folder, "test.csv"), "w").close()
    with pytest.raises(DataError, match="test.csv: no examples found"):
        load_dataset("dbpedia", folder)


def test_isic_csv_naming_a_missing_image(tmp_path):
    folder = write_isic(str(tmp_path))
    os.remove(os.path.join(folder, "train", "ISIC_0000003.png"))
    with pytest.raises(DataError, match=r"train.csv:5: image 'ISIC_0000003' is not in .*train"):
        load_dataset("isic", folder)


def test_unreadable_image_is_named(tmp_path):
    folder = write_fruits(str(tmp_path))
    bad = os.path.join(folder, "Training", "Banana", "2_100.png")
    with open(bad, "wb") as handle:
        handle.write(b"not a png at all")
    with pytest.raises(DataError, match=rf"{bad}: not a readable PNG, JPEG, GIF or BMP image"):
        load_dataset("fruits", folder)


def test_data_errors_are_user_errors():
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


def test_dbpedia_class_names_come_from_classes_txt(tmp_path):
    folder = write_dbpedia(str(tmp_path))
    assert load_dataset("dbpedia", folder).class_names[0] == "Company"  # Built in.
    names = [f"Class{i}" for i in range(14)]
    with open(os.path.join(folder, "classes.txt"), "w") as handle:
        handle.write("\n".join(names) + "\n")
    assert load_dataset("dbpedia", folder).class_names == tuple(names)
    with open(os.path.join(folder, "classes.txt"), "w") as handle:
        handle.write("Only\nTwo\n")
    with pytest.raises(DataError, match="classes.txt: expected 14 class names, one per line; got 2"):
        load_dataset("dbpedia", folder)


def _adult_file(tmp_path, content: bytes):
    folder = write_adult(str(tmp_path / "adult"), train_rows=20, test_rows=8)
    path = os.path.join(folder, "adult.data")
    with open(path, "wb") as handle:
        handle.write(content)
    return folder, path


def test_adult_bom_and_any_line_ending_are_read(tmp_path):
    from proto_tf.data import adult

    rows = [GOOD, GOOD.replace("39,", "40,", 1), GOOD.replace("39,", "41,", 1)]
    expected, _ = adult.read_adult_csv(_adult_file(tmp_path, ("\n".join(rows) + "\n").encode())[1])
    for name, content in {
        "bom": b"\xef\xbb\xbf" + "\n".join(rows).encode(),  # Was "'\ufeff39' is not a number".
        "crlf": "\r\n".join(rows).encode() + b"\r\n",
        "cr_only": "\r".join(rows).encode() + b"\r",  # Was a _csv.Error traceback.
        "lone_cr": (rows[0] + "\r" + rows[1] + "\n" + rows[2] + "\n").encode(),
    }.items():
        columns, labels = adult.read_adult_csv(_adult_file(tmp_path / name, content)[1])
        assert len(labels) == 3, name
        for column, values in expected.items():
            np.testing.assert_array_equal(columns[column], values, err_msg=f"{name}: {column}")


@pytest.mark.parametrize(
    "line, message",
    [
        (
            GOOD.replace("State-gov", '"State-gov'),
            r"adult.data:3: not valid CSV \(.*\); a field that opens a quote must close it",
        ),
        (GOOD.replace("State-gov", '"State"-gov'), r"adult.data:3: not valid CSV"),
        (
            GOOD.replace("State-gov", "State\x00gov"),
            r"adult.data:3: byte 10 is a NUL byte \(0x00\); the file must be UTF-8 text",
        ),
    ],
)
def test_adult_stray_quote_and_nul_byte_name_file_and_line(tmp_path, line, message):
    folder, _ = _adult_with_line(tmp_path, line)
    with pytest.raises(DataError, match=message):
        load_dataset("adult", folder, validation_fraction=0.0)


def test_adult_values_outside_the_vocabulary_are_counted_and_refused_when_most(tmp_path, capsys):
    from proto_tf.data import adult

    # Three of twenty rows with a lower-case workclass: counted and reported, then
    # treated as missing; sex coded M/F in every row: refused with the valid values.
    rows = [GOOD.replace("39,", f"{30 + i},", 1) for i in range(20)]
    rows[:3] = [row.replace("State-gov", "state-gov") for row in rows[:3]]
    _, path = _adult_file(tmp_path / "some", ("\n".join(rows) + "\n").encode())
    adult.read_adult_csv(path)
    assert capsys.readouterr().out.strip() == (
        f"warning: {path}: column 2 (workclass): 3 of 20 values are not in its vocabulary "
        "(most common: 'state-gov'); they are treated as missing (?)."
    )
    coded = [row.replace("Male", "M") for row in rows]
    folder, _ = _adult_file(tmp_path / "coded", ("\n".join(coded) + "\n").encode())
    with pytest.raises(
        DataError,
        match=r"adult.data: column 10 \(sex\): 20 of 20 values are not in its "
        r"vocabulary \(most common: 'M'\); valid: Female, Male \(or \? for a missing value\)\.",
    ):
        load_dataset("adult", folder, validation_fraction=0.0)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path, protocol):
    write_cifar10(str(tmp_path / "py"))
    marker = tmp_path / "ran"
    path = tmp_path / "py" / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _RunsACommand(marker), b"labels": [0]}, protocol=protocol))
    with pytest.raises(
        DataError, match=r"data_batch_1: .*names (posix|os)\.system, which a CIFAR-10 batch never holds"
    ):
        load_dataset("cifar10", str(tmp_path / "py"))
    assert not marker.exists()
