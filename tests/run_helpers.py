"""What the training tests share: the checkout's folder, a tiny Adult configuration on
written files, and the TensorBoard tags a run logged."""

import os

from data_files import write_adult

from proto_tf.training.config import ExperimentConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(tmp_path, name, **overrides):
    values = dict(
        dataset="adult",
        attention="sparsemax",
        data_dir=write_adult(str(tmp_path / "adult")),
        model_dir=str(tmp_path / name),
        train_steps=2,
        batch_size=8,
        train_database_size=16,
        infer_database_size=32,
        value_size=8,
        lstm_embedding_size=8,
        lstm_dropout=0.0,  # Dropout masks differ per replica: off for exact comparisons.
        validation_fraction=0.0,
        log_every=1,
        eval_batch_size=64,
        learning_rate=0.01,
    )
    values.update(overrides)
    return ExperimentConfig(**values)


def logged_tags(folder):
    import tensorflow as tf

    tags = set()
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            tags.update(value.tag for value in event.summary.value)
    return tags
