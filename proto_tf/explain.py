"""Explanations from an exported SavedModel: each input with its top prototypes (rows of
the training file), their weights and labels, as an image grid, texts or table rows."""

import os

import matplotlib

matplotlib.use("Agg")  # No display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from proto_tf.data import adult, dataset_info, load_dataset, text  # noqa: E402


def load_raw(dataset, data_dir):
    """Raw train and test examples, indexed by their row in the source files:
    `{"train": raw, "test": raw, "labels": {...}, "class_names": ...}`."""
    info = dataset_info(dataset)
    data_dir = os.path.expanduser(data_dir or info.default_data_dir)
    if dataset == "dbpedia":
        train_path, test_path = text.dbpedia_files(data_dir)
        train_texts, train_labels = text.read_dbpedia_csv(train_path)
        test_texts, test_labels = text.read_dbpedia_csv(test_path)
        return {"train": np.array(train_texts), "test": np.array(test_texts),
                "train_labels": train_labels, "test_labels": test_labels,
                "class_names": text.CLASS_NAMES}  # fmt: skip
    if dataset == "adult":
        train, train_labels = adult.read_adult_csv(os.path.join(data_dir, adult.TRAIN_FILE))
        test, test_labels = adult.read_adult_csv(os.path.join(data_dir, adult.TEST_FILE))
        return {"train": train, "test": test, "train_labels": train_labels,
                "test_labels": test_labels, "class_names": adult.CLASS_NAMES}  # fmt: skip
    loaded = load_dataset(dataset, data_dir, validation_fraction=0)
    return {"train": loaded.train.inputs, "test": loaded.test.inputs,
            "train_labels": loaded.train.labels, "test_labels": loaded.test.labels,
            "class_names": loaded.class_names}  # fmt: skip


def take(raw, positions):
    """The raw examples at `positions` (a dict of columns for Adult)."""
    if isinstance(raw, dict):
        return {name: column[positions] for name, column in raw.items()}
    return raw[positions]


def serving_inputs(kind, examples):
    """Raw examples as the tensors a `serving_default` call takes."""
    if kind == "image":
        return {"images": tf.constant(examples, tf.uint8)}
    if kind == "text":
        return {"texts": tf.constant(list(examples))}
    return {name.replace("-", "_"): tf.constant(column) for name, column in examples.items()}


def explain(saved_model_path, dataset, raw, positions, batch_size=256):
    """Calls `serving_default` on the test examples at `positions`; returns one dict
    per example: position, label, prediction, confidence, prototypes
    `[(training row, weight, label)]` with positive weight."""
    serve = tf.saved_model.load(saved_model_path).signatures["serving_default"]
    kind = dataset_info(dataset).kind
    results = []
    positions = np.asarray(positions)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        out = {k: v.numpy() for k, v in serve(**serving_inputs(kind, take(raw["test"], chunk))).items()}
        for row, position in enumerate(chunk):
            results.append({
                "position": int(position),
                "label": int(raw["test_labels"][position]),
                "prediction": int(out["class_ids"][row]),
                "confidence": float(out["confidence"][row]),
                "prototypes": [
                    (int(i), float(w), int(y))
                    for i, w, y in zip(out["prototype_indices"][row], out["prototype_weights"][row],
                                       out["prototype_labels"][row])  # fmt: skip
                    if w > 0
                ],
            })  # fmt: skip
    return results


def misclassified(explanations):
    """The wrong decisions, each with only its prototypes of another label (Fig. 9)."""
    wrong = []
    for item in explanations:
        if item["prediction"] != item["label"]:
            others = [p for p in item["prototypes"] if p[2] != item["label"]]
            wrong.append(dict(item, prototypes=others))
    return wrong


def render_images(explanations, raw, path):
    """A grid: each row an input, then its prototypes titled with weight and label."""
    columns = 1 + max(1, max(len(e["prototypes"]) for e in explanations))
    figure, axes = plt.subplots(len(explanations), columns, figsize=(1.6 * columns, 1.7 * len(explanations)), squeeze=False)
    names = raw["class_names"]
    for row, item in enumerate(explanations):
        panels = [(raw["test"][item["position"]], f"input: {names[item['label']]}\npred {names[item['prediction']]} c={item['confidence']:.2f}")]
        panels += [(raw["train"][index], f"{weight:.2f} {names[label]}") for index, weight, label in item["prototypes"]]
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(panels):
                image, title = panels[column]
                axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
                axis.set_title(title, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def render_text(explanations, raw, dataset, max_characters=160):
    """Markdown: each input and its prototypes, as texts (DBPedia) or rows (Adult)."""
    names = raw["class_names"]

    def describe(split, index):
        if dataset == "adult":
            return ", ".join(f"{k}={split[k][index]}" for k in adult.COLUMNS)
        return str(split[index])[:max_characters]

    lines = []
    for item in explanations:
        lines.append(
            f"**Input** (test row {item['position']}, label {names[item['label']]}, predicted "
            f"{names[item['prediction']]}, confidence {item['confidence']:.2f}): "
            f"{describe(raw['test'], item['position'])}"
        )
        for index, weight, label in item["prototypes"]:
            lines.append(f"- {weight:.2f} · {names[label]} · train row {index}: {describe(raw['train'], index)}")
        lines.append("")
    return "\n".join(lines)
