import json

import matplotlib.image
import numpy as np
from data_files import write_mnist

from proto_tf.analysis import evaluate_run
from proto_tf.data import shift
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer


def test_evaluation_writes_report_and_plots(tmp_path):
    data_dir = str(tmp_path / "fashion")
    write_mnist(data_dir, train=80, test=30)
    config = ExperimentConfig(
        dataset="fashion_mnist",
        attention="softmax",
        data_dir=data_dir,
        model_dir=str(tmp_path / "run"),
        train_steps=2,
        batch_size=8,
        train_database_size=16,
        infer_database_size=40,
        validation_fraction=0.25,
        value_size=8,
        resnet_depth=8,
        dense_units=(8,),
        eval_batch_size=32,
    )
    Trainer(config, verbose=False).train()
    report = evaluate_run.evaluate_model_dir(
        config.model_dir, checkpoint="last", shift_data_dirs={"mnist": data_dir}, dknn_neighbours=5
    )
    assert set(report["dknn"]) == {"dkNN confidence (k=5)", "dkNN credibility (k=5)"}
    for curve in report["dknn"].values():
        assert curve[0]["kept"] == 1.0 and 0.0 <= curve[0]["accuracy"] <= 1.0
    with open(tmp_path / "run" / "evaluation" / "evaluation.json") as handle:
        assert json.load(handle)["test"] == report["test"]
    curve = report["test"]["coverage_curve"]
    assert curve[0]["threshold"] == 0.0 and curve[0]["kept"] == 1.0
    assert curve[0]["accuracy"] == report["test"]["accuracy"]
    assert all(a["kept"] >= b["kept"] for a, b in zip(curve, curve[1:]))
    assert set(report["shift"]) == {"fashion_mnist (test)", "rotated fashion_mnist", "mnist"}
    for shares in report["shift"].values():
        assert all(1 >= a >= b >= 0 for a, b in zip(shares, shares[1:]))
    for key in ("coverage_png", "shift_png"):
        image = matplotlib.image.imread(report[key])
        assert image.shape[:2] == (1200, 1500)  # 5 x 4 inches at 300 dpi (was 600 x 480 at 120 dpi).
        with open(report[key][:-4] + ".pdf", "rb") as handle:  # A vector copy, TrueType fonts.
            content = handle.read()
        assert b"/FontFile2" in content and b"/Type3" not in content


def test_rotation_and_grey_conversion():
    images = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
    from proto_tf.data import Split

    split = Split(images, np.array([0, 1]), np.array([0, 1]))
    grey = shift.as_inputs_like(split, (28, 28, 1))
    assert grey.inputs.shape == (2, 28, 28, 1) and grey.inputs.dtype == np.uint8
    # At the model's size: exactly the R channel; grey images for a colour model: repeated.
    same = shift.as_inputs_like(split, (32, 32, 1))
    np.testing.assert_array_equal(same.inputs[..., 0], images[..., 0])
    colour = shift.as_inputs_like(Split(images[..., :1], split.labels, split.indices), (32, 32, 3))
    np.testing.assert_array_equal(colour.inputs, np.repeat(images[..., :1], 3, axis=-1))
    square = Split(images[..., :1], np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(shift.rotated(square).inputs[0, :, :, 0], np.rot90(images[0, :, :, 0]))
