"""What the export tests share: a tiny configuration, a trained and exported run of a
paper dataset on written files, its raw serving inputs, comparisons of served outputs,
and TF Serving's own loading path (a TF1 session)."""

import os

import numpy as np
import tensorflow as tf
from data_files import write_adult, write_dbpedia, write_mnist

from proto_tf.data import adult, text
from proto_tf.serving import export
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer

TINY = dict(
    train_steps=2,
    batch_size=8,
    train_database_size=16,
    infer_database_size=40,
    validation_fraction=0.0,
    value_size=8,
    resnet_depth=8,
    dense_units=(16,),
    vdcnn_first_filters=8,
    vdcnn_block_filters=(8,) * 8,
    lstm_embedding_size=8,
    eval_batch_size=64,
)


def train_and_export(tmp_path, dataset, attention="sparsemax"):
    writers = {"adult": write_adult, "mnist": write_mnist, "dbpedia": write_dbpedia}
    data_dir = str(tmp_path / f"{dataset}_data")
    writers[dataset](data_dir)
    config = ExperimentConfig(
        dataset=dataset,
        attention=attention,
        data_dir=data_dir,
        model_dir=str(tmp_path / f"{dataset}_{attention}"),
        **TINY,
    )
    trainer = Trainer(config, verbose=False)
    trainer.train()
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    return trainer, path, data_dir


def raw_test_inputs(dataset, trainer, data_dir, count=6):
    """Raw serving inputs for the first test examples, and their stored form."""
    test = trainer.dataset.test
    if dataset == "mnist":
        return {"images": test.inputs[:count]}, test.inputs[:count]
    if dataset == "dbpedia":
        texts, _ = text.read_dbpedia_csv(os.path.join(data_dir, "test.csv"))
        return {"texts": np.array(texts[:count])}, test.inputs[:count]
    columns, _ = adult.read_adult_csv(os.path.join(data_dir, "adult.test"))
    raw = {
        name.replace("-", "_"): column[:count].astype(np.float32 if name in adult.CONTINUOUS else str)
        for name, column in columns.items()
    }
    return raw, test.inputs[:count]


def assert_same(got, expected, message):
    """Numbers to float tolerance, strings exactly (TF1 sessions return bytes)."""
    expected = np.asarray(expected)
    if expected.dtype.kind in "OSU":
        np.testing.assert_array_equal(
            np.char.decode(np.asarray(got, bytes)) if np.asarray(got).dtype.kind in "OS" else got,
            expected.astype(str),
            err_msg=message,
        )
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=message)


def session_call(path, signature_name, feed):
    """Calls a signature as TF Serving does: a TF1 session over the `serve` MetaGraph,
    inputs fed and outputs fetched by the tensor names of the SignatureDef."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta_graph.signature_def[signature_name]
        feeds = {signature.inputs[name].name: value for name, value in feed.items()}
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return session.run(fetches, feeds)
