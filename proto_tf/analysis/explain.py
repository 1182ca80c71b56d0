"""Explanations from an exported SavedModel: each input with its top prototypes (rows of
the training file), their weights and labels, as an image grid, texts or table rows."""

import textwrap

import matplotlib

matplotlib.use("Agg")  # No display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from proto_tf.analysis.plots import save_figure  # noqa: E402
from proto_tf.data import dataset_info  # noqa: E402
from proto_tf.data.raw_examples import take  # noqa: E402
from proto_tf.errors import ConfigError  # noqa: E402
from proto_tf.serving.predict import export_data  # noqa: E402


def check_export_matches(path: str, dataset: str) -> None:
    """A ConfigError when the SavedModel at `path` does not take `dataset`'s inputs
    (another kind of data, or images of another shape)."""
    info = dataset_info(dataset)
    specs = dict(tf.saved_model.load(path).signatures["serving_default"].structured_input_signature[1])
    kind = export_data(path, specs)[0]
    shape = tuple(specs["images"].shape[1:]) if "images" in specs else None
    # Images are also checked for their shape (known unless a user's files set it).
    wanted = tuple(info.input_shape) if info.kind.examples_are_images and info.input_shape is not None else None
    if kind is not info.kind or (shape and wanted and shape != wanted):
        takes = f"{kind.name} inputs" + (f" of shape {shape}" if shape else "")
        raise ConfigError(
            f"--dataset={dataset} does not match the SavedModel {path}: it takes {takes}, "
            f"{dataset} has {info.kind.name} inputs"
            + (f" of shape {wanted}" if wanted else "")
            + "; give the dataset the model was trained on."
        )


def explain(saved_model_path, dataset, raw, positions, batch_size=256):
    """Calls `serving_default` on the test examples at `positions`; returns one dict
    per example with named fields: `test_row`, `label`, `label_name`, `prediction`,
    `prediction_name`, `confidence` (Eq. 3), `shown_weight` (the share of the attention
    weight the listed prototypes carry) and `prototypes`, a list of `{train_row, weight,
    label, label_name}` with positive weight. Rows count a file's examples from 0
    (blank lines and the test file's header are not examples)."""
    serve = tf.saved_model.load(saved_model_path).signatures["serving_default"]
    kind = dataset_info(dataset).kind
    names = raw["class_names"]
    results = []
    positions = np.asarray(positions)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        inputs = kind.request(take(raw["test"], chunk), raw)
        out = {k: v.numpy() for k, v in serve(**inputs).items()}
        for row, position in enumerate(chunk):
            prototypes = [
                {"train_row": int(i), "weight": float(w), "label": int(y), "label_name": names[int(y)]}
                for i, w, y in zip(
                    out["prototype_indices"][row], out["prototype_weights"][row], out["prototype_labels"][row]
                )
                if w > 0
            ]
            label, prediction = int(raw["test_labels"][position]), int(out["class_ids"][row])
            results.append(
                {
                    "test_row": int(position),
                    "label": label,
                    "label_name": names[label],
                    "prediction": prediction,
                    "prediction_name": names[prediction],
                    "confidence": float(out["confidence"][row]),
                    "shown_weight": float(sum(p["weight"] for p in prototypes)),
                    "prototypes": prototypes,
                }
            )
    return results


def misclassified(explanations):
    """The wrong decisions, each with only its prototypes of another label than the
    true one (Fig. 9): the training examples that pulled the decision away."""
    wrong = []
    for item in explanations:
        if item["prediction"] != item["label"]:
            others = [p for p in item["prototypes"] if p["label"] != item["label"]]
            wrong.append(dict(item, prototypes=others, shown_weight=sum(p["weight"] for p in others)))
    return wrong


MISCLASSIFIED_NOTE = (
    "Misclassified test examples, each with only its prototypes of a wrong label (those that "
    "pulled the decision away); the confidence printed is the model's Eq. 3 confidence in "
    "its wrong prediction."
)


def _test_panel(item, raw):
    return (
        raw["test"][item["test_row"]],
        f"test row {item['test_row']}: {item['label_name']}\npred. {item['prediction_name']} "
        f"(conf. {item['confidence']:.2f})",
    )


def render_images(explanations, raw, path, dpi=300, caption=None, first_panel=_test_panel):
    """A grid, each row an input and its prototypes titled with their attention weight
    and label, saved as `path` (PNG at `dpi`) and beside it as a vector PDF (TrueType
    fonts), with `caption` above the grid when given. `first_panel(item, raw)` gives
    each row's own image and title (default: the test example). Returns both paths."""
    columns = 1 + max(1, max(len(e["prototypes"]) for e in explanations))
    figure, axes = plt.subplots(
        len(explanations), columns, figsize=(1.6 * columns, 1.8 * len(explanations)), squeeze=False
    )
    for row, item in enumerate(explanations):
        panels = [first_panel(item, raw)]
        panels += [
            (raw["train"][p["train_row"]], f"weight {p['weight']:.2f}: {p['label_name']}\ntrain row {p['train_row']}")
            for p in item["prototypes"]
        ]
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(panels):
                image, title = panels[column]
                axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
                axis.set_title(title, fontsize=8)
    if caption:
        figure.suptitle(textwrap.fill(caption, 20 * columns), fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi)


def render_text(explanations, raw, dataset, max_characters=160):
    """Markdown: each input and its prototypes; Adult as a table with one column per
    feature, DBPedia as texts. Each says what share of the weight the rows carry."""
    lines = []
    for item in explanations:
        lines.append(
            f"**Test row {item['test_row']}**: label {item['label_name']}, predicted "
            f"{item['prediction_name']}, confidence {item['confidence']:.2f}. The "
            f"{len(item['prototypes'])} prototypes below carry {100 * item['shown_weight']:.1f} % "
            "of the attention weight (rows count examples from 0)."
        )
        lines.append("")
        if "schema" in raw:
            lines += _table(item, raw)
        else:
            lines.append(f"> {str(raw['test'][item['test_row']])[:max_characters]}")
            lines.append("")
            for p in item["prototypes"]:
                text = str(raw["train"][p["train_row"]])[:max_characters]
                lines.append(f"- {p['weight']:.3f} · {p['label_name']} · train row {p['train_row']}: {text}")
        lines.append("")
    return "\n".join(lines)


def _table(item, raw):
    schema = raw["schema"]
    header = ["", "weight", "label"] + list(schema.columns)
    rows = [[f"test row {item['test_row']}", "", item["label_name"]] + _values(schema, raw["test"], item["test_row"])]
    rows += [
        [f"train row {p['train_row']}", f"{p['weight']:.3f}", p["label_name"]]
        + _values(schema, raw["train"], p["train_row"])
        for p in item["prototypes"]
    ]
    table = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return table + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _values(schema, columns, row):
    """A row's fields as text; a missing number is an empty cell."""
    return [
        ("" if np.isnan(columns[name][row]) else f"{columns[name][row]:g}")
        if schema.is_numeric(name)
        else str(columns[name][row])
        for name in schema.columns
    ]
