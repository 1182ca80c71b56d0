import matplotlib.image
import numpy as np

from data_files import write_mnist
from proto_tf import explain, export
from proto_tf.config import ExperimentConfig
from proto_tf.training import Trainer


def test_explanations_from_a_saved_model(tmp_path):
    data_dir = str(tmp_path / "mnist")
    write_mnist(data_dir, train=60, test=12)
    config = ExperimentConfig(
        dataset="mnist", attention="sparsemax", data_dir=data_dir, model_dir=str(tmp_path / "run"),
        train_steps=2, batch_size=8, train_database_size=16, infer_database_size=30,
        validation_fraction=0.0, value_size=8, resnet_depth=8, dense_units=(8,), eval_batch_size=32,
    )  # fmt: skip
    Trainer(config, verbose=False).train()
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    raw = explain.load_raw("mnist", data_dir)
    items = explain.explain(path, "mnist", raw, list(range(12)), batch_size=5)
    assert [item["position"] for item in items] == list(range(12))
    for item in items:
        assert item["label"] == raw["test_labels"][item["position"]]
        assert 0 < sum(w for _, w, _ in item["prototypes"]) <= 1 + 1e-5
        for index, _, label in item["prototypes"]:
            assert raw["train_labels"][index] == label
    wrong = explain.misclassified(items)
    assert len(wrong) == sum(item["prediction"] != item["label"] for item in items)
    assert all(p[2] != item["label"] for item in wrong for p in item["prototypes"])
    png = explain.render_images(items[:3], raw, str(tmp_path / "grid.png"))
    assert matplotlib.image.imread(png).shape[0] > 100
    markdown = explain.render_text(items[:1], {**raw, "train": raw["train"].reshape(60, -1)[:, :3],
                                               "test": raw["test"].reshape(12, -1)[:, :3]}, "mnist")  # fmt: skip
    assert markdown.startswith("**Input** (test row 0") and np.isfinite(items[0]["confidence"])
