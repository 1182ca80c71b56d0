"""Every Keras class the project registers is rebuilt from its config, revived through
Keras' registry and, where it takes one tensor, saved to and loaded from a `.keras`
file, with its outputs unchanged (tests/keras_checks.py)."""

import keras
import numpy as np
import pytest
from keras_checks import randomised, run_model_saving_test, run_serialization_test

from proto_tf import BaselineClassifier, ProtoAttend
from proto_tf.attention import PrototypeAttention
from proto_tf.candidate_memory import CandidateMemory
from proto_tf.data.images import PerImageStandardization
from proto_tf.data.tabular import CategoricalColumn, NumericColumn, TabularFeatures, TabularSchema
from proto_tf.data.text import CharacterQuantizer
from proto_tf.encoders import VDCNN, KMaxPooling, ResNet, TabularLSTM
from proto_tf.encoders.backbone import BackboneFeatures, FeatureStandardization
from proto_tf.encoders.layers import DenseNormStack, FusedBatchNormalization
from proto_tf.encoders.resnet import ResidualBlock
from proto_tf.training.scaled_adam import ScaledAdam

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(3, 8, 8, 2)).astype("float32")


def _built(layer, example):
    layer(example, training=False)
    return randomised(layer)


# (name, the layer called once, an example input): each takes one tensor.
CASES = {
    "FusedBatchNormalization": lambda: (_built(FusedBatchNormalization(), IMAGES), IMAGES),
    "DenseNormStack": lambda: (_built(DenseNormStack((5, 4)), IMAGES[:, 0, 0]), IMAGES[:, 0, 0]),
    "ResidualBlock": lambda: (_built(ResidualBlock(4, strides=2), IMAGES), IMAGES),
    "ResNet": lambda: (_built(ResNet(8, (6,), base_filters=4), IMAGES), IMAGES),
    "KMaxPooling": lambda: (KMaxPooling(2), IMAGES[:, 0]),
    "VDCNN": lambda: (
        _built(VDCNN(4, 4, (4, 4), k=2, dense_units=(6,)), RNG.integers(0, 69, (3, 32)).astype("int32")),
        RNG.integers(0, 69, (3, 32)).astype("int32"),
    ),
    "TabularLSTM": lambda: (
        _built(TabularLSTM(4, dropout=0.0), RNG.normal(size=(3, 12)).astype("float32")),
        RNG.normal(size=(3, 12)).astype("float32"),
    ),
    "CharacterQuantizer": lambda: (CharacterQuantizer(10, alphabet="abc "), np.array(["a cab", "bad", ""])),
    "PerImageStandardization": lambda: (PerImageStandardization(), IMAGES),
    "FeatureStandardization": lambda: (_built(FeatureStandardization(), IMAGES[:, 0, 0]), IMAGES[:, 0, 0]),
    "BackboneFeatures": lambda: (
        _built(
            BackboneFeatures(
                keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(3, 3)]), pooling="max", channels=2
            ),
            IMAGES,
        ),
        IMAGES,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_configs_registry_and_keras_files_keep_the_outputs(name, tmp_path):
    layer, example = CASES[name]()
    run_serialization_test(layer, example)
    run_model_saving_test(layer, example, tmp_path)


def test_prototype_attention_and_tabular_features_round_trip():
    attention = PrototypeAttention("sparsemax", sparsemax_top_k=4)
    example = (RNG.normal(size=(2, 3)), RNG.normal(size=(7, 3)), RNG.normal(size=(7, 5)))
    expected = attention(*example)
    for clone in (
        PrototypeAttention.from_config(attention.get_config()),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(attention)),
    ):
        assert clone.get_config() == attention.get_config()
        for got, want in zip(clone(*example), expected):
            np.testing.assert_allclose(got, want, atol=1e-6)
    schema = TabularSchema(
        ("age", "job"),
        (NumericColumn("age", 30.0, 10.0, missing_indicator=True),),
        (CategoricalColumn("job", ("clerk", "nurse")),),
        ("", "?"),
    )
    features = TabularFeatures(schema)
    columns = {"age": np.array([40.0, np.nan], "float32"), "job": np.array(["nurse", "pilot"])}
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(features))
    assert revived.schema == schema
    # Hand values: (40 - 30) / 10 = 1, missing -> 0 with indicator 1; nurse -> [0, 1], unknown -> [0, 0].
    np.testing.assert_array_equal(revived(columns), [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize("model_class", [BaselineClassifier, ProtoAttend])
def test_models_round_trip_with_their_database(model_class, tmp_path):
    encoder = keras.Sequential([keras.layers.Dense(6)], name="encoder")
    model = model_class(encoder, 3) if model_class is BaselineClassifier else model_class(encoder, 3, "softmax")
    model.build((None, 4))
    randomised(model)
    example = RNG.normal(size=(5, 4)).astype("float32")
    if model.uses_database:
        candidates = RNG.normal(size=(9, 4)).astype("float32")
        model.set_database(*model.encode_database(candidates), labels=np.arange(9) % 3)
    run_model_saving_test(model, example, tmp_path)
    clone = model_class.from_config(model.get_config())
    clone.build((None, 4))
    assert [w.path for w in clone.weights] != [] and len(clone.weights) == len(model.weights)


def test_a_model_with_a_candidate_memory_keeps_it_in_a_keras_file(tmp_path):
    # The memory's slots and write count come back: the next write lands in the same
    # slots, and attending over the memory gives the same training outputs.
    encoder = keras.Sequential([keras.layers.Dense(6)], name="encoder")
    model = ProtoAttend(encoder, 3, "softmax", candidate_gradients=False, candidate_memory=8)
    model.build((None, 4))
    data = {"inputs": RNG.normal(size=(5, 4)).astype("float32"), "labels": np.arange(5) % 3}
    model.forward_train({**data, "candidate_inputs": RNG.normal(size=(5, 4)).astype("float32")}, 0.5)
    assert CandidateMemory.from_config(model.memory.get_config()).size == 8
    path = str(tmp_path / "memory.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.memory.writes.numpy()) == 5
    np.testing.assert_array_equal(loaded.memory.features.numpy(), model.memory.features.numpy())
    step = {**data, "candidate_inputs": RNG.normal(size=(4, 4)).astype("float32")}
    for got, want in zip(loaded.forward_train(step, 0.5).values(), model.forward_train(step, 0.5).values()):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert int(loaded.memory.writes.numpy()) == 9


def test_a_text_presets_features_survive_a_keras_file(tmp_path):
    # keras-hub keeps a tokenizer's vocabulary as an asset, read only after the model is
    # rebuilt; TextPreparation keeps it in its config, so the rebuilt layer tokenizes.
    pytest.importorskip("keras_hub")
    from hub_presets import SPECIAL_TOKENS, tiny_bert

    from proto_tf.encoders.backbone import TextPreparation

    backbone, preprocessor = tiny_bert(["cab", "bad", "a", "b"], width=8, sequence_length=8)
    vocabulary = [*SPECIAL_TOKENS, "cab", "bad", "a", "b"]
    layer = BackboneFeatures(backbone, TextPreparation("abc ", preprocessor))
    codes = np.array([[1, 3, 2, 0, 0], [2, 1, 4, 0, 0], [1, 0, 0, 0, 0]], "int32")  # "acb", "bad"->"ba ", "a".
    loaded = run_model_saving_test(layer, codes, tmp_path)
    assert loaded.layers[-1].converter.preprocessor.tokenizer.get_vocabulary() == vocabulary


def test_every_registered_class_is_covered_here():
    """A class registered later with `register_keras_serializable` fails this until it
    has a round-trip case above."""
    import proto_tf.analysis.audit  # noqa: F401  (every module that registers a class)
    import proto_tf.serving.export  # noqa: F401

    registered = {name.split(">", 1)[1] for name in keras.saving.get_custom_objects() if name.startswith("proto_tf>")}
    covered = set(CASES) | {
        "PrototypeAttention",
        "TabularFeatures",
        "BaselineClassifier",
        "ProtoAttend",
        "ScaledAdam",
        "CandidateMemory",
        "TextPreparation",
    }
    assert registered == covered


def test_scaled_adam_round_trips_its_scale():
    optimizer = ScaledAdam(learning_rate=0.01, scale=0.25, clipvalue=20.0)
    for clone in (
        ScaledAdam.from_config(optimizer.get_config()),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer)),
    ):
        assert type(clone) is ScaledAdam and clone.get_config() == optimizer.get_config()
        assert clone.scale == 0.25
