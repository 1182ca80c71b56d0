"""The model and optimizer an experiment's configuration describes: the encoder by
name (the Appendix A encoders, a frozen backbone's features, a fine-tuned backbone),
ProtoAttend or the baseline around it, and the paper's Adam."""

import keras

from proto_tf.attention import SPARSEMAX_TOP_K
from proto_tf.baseline import BaselineClassifier
from proto_tf.data.dataset_info import DatasetInfo
from proto_tf.encoders import VDCNN, ResNet, TabularLSTM
from proto_tf.encoders.backbone import backbone_layers, fine_tuned_encoder
from proto_tf.model import ProtoAttend
from proto_tf.training import features
from proto_tf.training.scaled_adam import ScaledAdam


def _with_dropout(core, config):
    """`core`, followed by `config.encoder_dropout` on its output when set (Table 3's
    "Dropout" baseline)."""
    if not config.encoder_dropout:
        return core
    return keras.Sequential([core, keras.layers.Dropout(config.encoder_dropout)], name="encoder")


def _lstm(config):
    return TabularLSTM(config.lstm_embedding_size, dropout=config.lstm_dropout, name="encoder")  # Its own dropout.


def _vdcnn(config):
    core = VDCNN(
        first_filters=config.vdcnn_first_filters,
        block_filters=config.vdcnn_block_filters,
        dense_units=config.dense_units,
        name="vdcnn",
    )
    return _with_dropout(core, config)


def _resnet(config):
    core = ResNet(
        config.resnet_depth,
        config.dense_units,
        downsample_stem=config.downsample_stem,
        weight_decay=config.weight_decay,
        base_filters=config.resnet_filters,
        name="resnet",
    )
    return _with_dropout(core, config)


def _features(config):
    # A frozen backbone's cached features go to the heads as they are (`--encoder_dropout`
    # still applies); the Appendix A encoders' flags are unused.
    return _with_dropout(keras.layers.Identity(name="features"), config)


# The encoders by the name a kind of data gives (`DataKind.encoder`): the Appendix A
# ones, and the frozen backbone's features.
ENCODERS = {"lstm": _lstm, "vdcnn": _vdcnn, "resnet": _resnet, "features": _features}


def build_encoder(config, info: DatasetInfo):
    """The encoder of the dataset's kind (`DataKind.encoder`), sized by `config`: an
    Appendix A encoder, or an identity over a frozen backbone's features. Images and
    text take an optional dropout on the encoder output (0 by default); the LSTM has
    its own dropout (0.5). With `--backbone_trainable`, the backbone itself
    (`fine_tuned_encoder`)."""
    if config.backbone_trainable:
        backbone = features.backbone_of_run(config, info)
        return _with_dropout(fine_tuned_encoder(backbone), config)
    return ENCODERS[info.kind.encoder](config)


def build_model(config, info: DatasetInfo, num_classes):
    """The experiment's built model: ProtoAttend, or the BaselineClassifier for
    `--attention=none`."""
    if config.attention == "none":
        model = BaselineClassifier(build_encoder(config, info), num_classes, name="proto_attend")
        model.build((None,) + tuple(info.input_shape), input_dtype=info.input_dtype)
        return model
    model = ProtoAttend(
        build_encoder(config, info),
        num_classes,
        attention=config.attention,
        attention_size=config.attention_size,
        value_size=config.value_size,
        sparsity_weight=config.sparsity_weight,
        matching_loss_weight=config.matching_loss_weight,
        matching_warmup_steps=config.matching_warmup_steps,
        tied_head_init=config.tied_head_init,
        cosine_scale=config.cosine_scale,
        alpha_range=(config.alpha_min, config.alpha_max),
        seed=config.seed,
        candidate_gradients=config.candidate_gradients and not config.candidate_refresh,
        joint_encoding=config.joint_encoding,
        candidate_memory=config.train_database_size if config.candidate_refresh else 0,
        sparsemax_top_k=SPARSEMAX_TOP_K,  # The fast exact path, also under XLA.
        name="proto_attend",
    )
    model.build((None,) + tuple(info.input_shape), input_dtype=info.input_dtype)
    return model


def learning_rate_schedule(config):
    """Continuous exponential decay, lr * rate^(step / decay_steps): the authors' code
    uses `tf.train.exponential_decay` with its default (no staircase)."""
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, config.decay_steps, config.decay_rate, staircase=False
    )


def build_optimizer(config, model=None):
    """Adam with `learning_rate_schedule` and clipping by value (Appendix A). With
    `--backbone_trainable`, the backbone's variables in `model` (built) learn at
    `backbone_learning_rate_scale` times the rate (`ScaledAdam`)."""
    schedule = learning_rate_schedule(config)
    if not config.backbone_trainable:
        return keras.optimizers.Adam(schedule, clipvalue=config.clip_value)
    if model is None:
        raise ValueError("a fine-tuned backbone's optimizer needs the built model.")
    optimizer = ScaledAdam(schedule, clipvalue=config.clip_value, scale=config.backbone_learning_rate_scale)
    optimizer.scale_variables([v for layer in backbone_layers(model) for v in layer.trainable_variables])
    return optimizer
