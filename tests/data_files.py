"""Writers of small datasets in the real on-disk formats, for the tests."""

import csv
import gzip
import os
import pickle
import struct

import numpy as np
import tensorflow as tf

ADULT_ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K",
    "38, ?, 215646, HS-grad, 9, Divorced, ?, Not-in-family, White, Female, 0, 1902, 40, ?, <=50K",
    "28, Private, 338409, Masters, 14, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 14084, 0, 45, Cuba, >50K",
]


def write_adult(folder, train_rows=200, test_rows=60, seed=0):
    """adult.data / adult.test with the test file's header and trailing '.' labels.
    Rows cycle through ADULT_ROWS with the age changed so that rows differ."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)

    def rows(count, test):
        for index in range(count):
            fields = ADULT_ROWS[index % len(ADULT_ROWS)].split(", ")
            if index >= len(ADULT_ROWS):
                fields[0] = str(int(rng.integers(17, 90)))
            line = ", ".join(fields)
            yield line + ("." if test else "")

    with open(os.path.join(folder, "adult.data"), "w") as handle:
        handle.write("\n".join(rows(train_rows, False)) + "\n\n")
    with open(os.path.join(folder, "adult.test"), "w") as handle:
        handle.write("|1x3 Cross validator\n" + "\n".join(rows(test_rows, True)) + "\n")
    return folder


def write_idx(path, array):
    """An IDX file (gzipped when `path` ends in .gz) of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_mnist(folder, train=120, test=40, seed=0):
    """The four IDX files of MNIST/Fashion-MNIST; returns the arrays written."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), labels)
        arrays[split] = (images, labels)
    return arrays


def write_cifar10(folder, per_batch=20, binary=False, seed=0):
    """cifar-10-batches-py (pickles) or cifar-10-batches-bin; returns the first batch."""
    rng = np.random.default_rng(seed)
    sub = os.path.join(folder, "cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    os.makedirs(sub, exist_ok=True)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, per_batch))
        if binary:
            records = np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1)
            records.tofile(os.path.join(sub, name + ".bin"))
        else:
            with open(os.path.join(sub, name), "wb") as handle:
                pickle.dump({b"data": data, b"labels": labels}, handle)
        first = first or (data, labels)
    return first


def _write_png(path, image):
    tf.io.write_file(path, tf.io.encode_png(image))


def write_fruits(folder, classes=("Apple", "Banana", "Cherry"), per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("Training", "Test"):
        for class_name in classes:
            class_dir = os.path.join(folder, split, class_name)
            os.makedirs(class_dir, exist_ok=True)
            for index in range(per_class):
                size = 100 if index else 120  # One image needs resizing.
                image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                _write_png(os.path.join(class_dir, f"{index}_100.png"), image)
    return folder


def write_isic(folder, train=20, test=10, melanoma_every=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        with open(os.path.join(folder, split + ".csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "label"])
            for index in range(count):
                image_id = f"ISIC_{index:07d}"
                label = "malignant" if index % melanoma_every == 0 else "benign"
                writer.writerow([image_id, label])
                image = rng.integers(0, 256, size=(150, 140, 3), dtype=np.uint8)
                _write_png(os.path.join(folder, split, image_id + ".png"), image)
    return folder


def write_dbpedia(folder, train=70, test=28):
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(folder, name), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            for index in range(count):
                label = index % 14 + 1
                writer.writerow([label, f"Title {index}", f"Content of class {label}, row {index}. Caf\u00e9!"])
    return folder


def write_own_table(folder, rows=240, test_rows=None, seed=0):
    """A user's table: mixed types, missing values, names with spaces and symbols, a
    string label that depends on the columns (so a model can learn it). With
    `test_rows`, also a test.csv whose columns come in another order."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    header = ["Age (years)", "colour", "income $", "id-code", "outcome"]

    def make(count):
        out = []
        for _ in range(count):
            age = float(rng.integers(18, 80))
            colour = str(rng.choice(["red", "green", "blue"]))
            income = round(float(rng.normal(50, 15)), 2)
            label = "yes" if (age > 45) != (colour == "blue") else "no"
            fields = [f"{age:g}", colour, f"{income}", f"{int(rng.integers(1, 4))}", label]
            if rng.random() < 0.1:
                fields[2] = str(rng.choice(["", "NA", "?", "NaN"]))  # A missing number.
            if rng.random() < 0.1:
                fields[1] = ""  # A missing category.
            out.append(fields)
        return out

    with open(os.path.join(folder, "train.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(make(rows))
    if test_rows:
        order = [4, 2, 0, 3, 1]
        with open(os.path.join(folder, "test.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([header[i] for i in order])
            writer.writerows([[row[i] for i in order] for row in make(test_rows)])
    return folder


def write_own_images(folder, classes=("cat", "dog"), per_class=12, size=(12, 10), grey=False, test=True, seed=0):
    """train/<class>/*.png (and test/<class>/*.png): each class a different brightness,
    so a model can learn it."""
    rng = np.random.default_rng(seed)
    channels = 1 if grey else 3
    for split in ("train", "test") if test else ("train",):
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(folder, split, name), exist_ok=True)
            for index in range(per_class):
                base = 60 + 120 * label
                image = np.clip(rng.normal(base, 20, size=(*size, channels)), 0, 255).astype(np.uint8)
                _write_png(os.path.join(folder, split, name, f"{index}.png"), image)
    return folder


def write_own_documents(folder, rows=60, test_rows=20, seed=0):
    """train.csv / test.csv: title, body (some bodies hold a quoted newline) and topic;
    each topic has its own words, so a model can learn it."""
    rng = np.random.default_rng(seed)
    words = {"sport": ["goal", "match", "team"], "music": ["song", "band", "album"]}
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train.csv", rows), ("test.csv", test_rows)):
        with open(os.path.join(folder, name), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["title", "body", "topic"])
            for index in range(count):
                topic = ("sport", "music")[index % 2]
                body = " ".join(rng.choice(words[topic], 6))
                if index % 5 == 0:
                    body += "\nsecond line"
                writer.writerow([f"{topic} news {index}", body, topic])
    return folder


def _topic_texts(rng, count, num_classes, words_per_text=(8, 16)):
    """`count` (label, title, body) rows: each class has four words of its own, and a
    text is three quarters its class's words and a quarter words shared by every class, so a
    character model has to find the class's words to tell the classes apart."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = ["".join(rng.choice(letters, rng.integers(4, 8))) for _ in range(4 * num_classes + 40)]
    own, shared = vocabulary[: 4 * num_classes], vocabulary[4 * num_classes :]
    rows = []
    for index in range(count):
        label = index % num_classes
        length = rng.integers(*words_per_text)
        words = [
            own[4 * label + rng.integers(4)] if rng.random() < 0.75 else shared[rng.integers(len(shared))]
            for _ in range(length)
        ]
        rows.append((label, " ".join(words[:2]).title(), " ".join(words[2:]) + "."))
    return rows


def write_learnable_dbpedia(folder, train=1400, test=280, seed=0):
    """DBPedia's train.csv / test.csv (`class,"title","content"`, classes 1-14) whose
    classes a character model can learn in a few hundred steps (`_topic_texts`)."""
    rng = np.random.default_rng(seed)
    rows = _topic_texts(rng, train + test, 14)
    rng.shuffle(rows)
    os.makedirs(folder, exist_ok=True)
    for name, part in (("train.csv", rows[:train]), ("test.csv", rows[train:])):
        with open(os.path.join(folder, name), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerows([[label + 1, title, body] for label, title, body in part])
    return folder


def write_learnable_documents(folder, train=1000, test=200, num_classes=5, seed=0):
    """A user's documents (train.csv / test.csv: title, body, topic) from `_topic_texts`."""
    rng = np.random.default_rng(seed)
    rows = _topic_texts(rng, train + test, num_classes)
    rng.shuffle(rows)
    os.makedirs(folder, exist_ok=True)
    for name, part in (("train.csv", rows[:train]), ("test.csv", rows[train:])):
        with open(os.path.join(folder, name), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["title", "body", "topic"])
            writer.writerows([[title, body, f"topic_{label}"] for label, title, body in part])
    return folder


def write_learnable_images(folder, per_class=60, test_per_class=15, size=(16, 16), seed=0):
    """train/<class>/*.png and test/<class>/*.png of four classes told apart by the
    direction of their stripes (horizontal, vertical and both diagonals) under noise,
    at random phases and equal mean brightness: a model has to learn shapes."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[: size[0], : size[1]]
    directions = {"horizontal": (1, 0), "vertical": (0, 1), "diagonal": (1, 1), "antidiagonal": (1, -1)}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name, (a, b) in directions.items():
            os.makedirs(os.path.join(folder, split, name), exist_ok=True)
            for index in range(count):
                phase = rng.uniform(0, 2 * np.pi)
                stripes = np.sin(2 * np.pi * (a * rows + b * columns) / 4 + phase)
                image = 128 + 60 * stripes + rng.normal(0, 30, size)
                _write_png(
                    os.path.join(folder, split, name, f"{index}.png"),
                    np.clip(image, 0, 255).astype(np.uint8)[..., None].repeat(3, -1),
                )
    return folder


def write_learnable_table(folder, train=1500, test=300, seed=0):
    """A user's table (train.csv / test.csv): two numeric and one categorical column,
    the label ("yes"/"no") a rule over all three that no single column gives."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train.csv", train), ("test.csv", test)):
        x, y = rng.normal(size=count), rng.normal(size=count)
        colour = rng.choice(["red", "green", "blue"], count)
        flip = np.where(colour == "red", -1.0, 1.0)
        label = np.where(flip * x * y + 0.3 * (colour == "blue") > 0, "yes", "no")
        with open(os.path.join(folder, name), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x", "y", "colour", "label"])
            writer.writerows(zip(np.round(x, 4), np.round(y, 4), colour, label))
    return folder
