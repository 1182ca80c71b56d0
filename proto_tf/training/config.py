"""Typed experiment configuration and the model it describes."""

import dataclasses
import math

from proto_tf.attention import NORMALIZATIONS
from proto_tf.data.registry import dataset_info
from proto_tf.data.text import ALPHABET, SEQUENCE_LENGTH
from proto_tf.encoders.backbone import POOLINGS
from proto_tf.errors import ConfigError

FEATURE_DTYPES = ("float32", "float16")  # How a frozen backbone's features are cached.
# `--attention`: a normalisation of ProtoAttend, or "none" for the baseline encoder.
ATTENTIONS = NORMALIZATIONS + ("none",)


DBPEDIA_ALPHABET = "".join(ALPHABET)
# Datasets of a user's own files, and the fields that only they read (field: datasets).
USER_DATASETS = ("csv", "image_folder", "text_csv")
USER_DATA_FIELDS = {
    "label_column": ("csv", "text_csv"),
    "categorical_columns": ("csv",),
    "numeric_columns": ("csv",),
    "ignore_columns": ("csv",),
    "max_categories": ("csv",),
    "test_fraction": USER_DATASETS,
    "image_size": ("image_folder",),
    "flip_left_right": ("image_folder",),
    "flip_up_down": ("image_folder",),
    "text_columns": ("text_csv",),
    "sequence_length": ("text_csv",),
    "alphabet": ("text_csv",),
}
# Fields holding lists of names (the other tuple fields hold integers).
NAME_LIST_FIELDS = ("categorical_columns", "numeric_columns", "ignore_columns", "text_columns")


# The builders of the model and optimizer a configuration describes (their home is
# builders.py; imported here for the callers that know them as config's).
from proto_tf.training.builders import (  # noqa: E402, F401
    ENCODERS,
    build_encoder,
    build_model,
    build_optimizer,
    learning_rate_schedule,
)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs; `run/train.py` fills it from flags.

    Defaults are the paper's shared settings (Appendix A): batch 128, Adam with a
    continuous exponential decay, gradients clipped by value at 20, attention size 16.
    """

    dataset: str = "adult"
    attention: str = "softmax"
    data_dir: str | None = None
    model_dir: str = "runs/adult_softmax"
    download: bool = False
    # Optimisation.
    train_steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-3
    decay_rate: float = 0.9
    decay_steps: int = 2000
    clip_value: float = 20.0
    seed: int = 0
    # Prototypical learning.
    train_database_size: int = 1024
    infer_database_size: int = 4096
    attention_size: int = 16
    value_size: int = 64
    sparsity_weight: float = 0.0
    # Ablation knob, 1 = the paper: weight of Eq. 1's prototype and mixed terms.
    matching_loss_weight: float = 1.0
    # Deviation for heavy label noise, 0 = the paper: the first this-many steps train
    # the plain term alone, then Eq. 1 and Eq. 2 in full (docs/training.md, "Attention hubs").
    matching_warmup_steps: int = 0
    # Deviation for heavy label noise, False = the paper: the key head starts as the query head.
    tied_head_init: bool = False
    # Deviation for heavy label noise, 0 = the paper: s > 0 scores candidates by s * cosine(q, k).
    cosine_scale: float = 0.0
    alpha_min: float = 0.45
    alpha_max: float = 0.5
    candidate_gradients: bool = True  # False: candidates encoded forward-only (faster).
    # With candidate gradients: inputs and candidates in one encoder call (False: two
    # calls, each with its own BatchNorm batch statistics, as the authors' code).
    joint_encoding: bool = True
    # > 0: encode this many fresh candidates per step into a memory of the last
    # train_database_size encodings, and attend over the memory (forward-only).
    candidate_refresh: int = 0
    # > 0: before each evaluation and the last checkpoint, BatchNorm's moving statistics
    # are replaced by the mean batch statistics of this many training steps' encoder
    # batches. 0 (the authors' way) evaluates with the moving averages (momentum 0.9 in
    # every encoder, encoders.layers.BN_MOMENTUM); the learning tests check that they
    # answer as the batch statistics do (tests/test_learning.py).
    batchnorm_batches: int = 0
    # Data.
    label_noise: float = 0.0
    validation_fraction: float = 0.1
    # A cleaned training split (run/audit.py --drop / --relabel): CSV files of rows.
    drop_rows: str = ""
    relabel_rows: str = ""
    # A user's own table (--dataset=csv); see proto_tf/data/csv_dataset.py.
    label_column: str | None = None
    categorical_columns: tuple = ()
    numeric_columns: tuple = ()
    ignore_columns: tuple = ()
    max_categories: int = 1000
    test_fraction: float = 0.2
    # A user's own images (--dataset=image_folder); see proto_tf/data/image_folder.py.
    image_size: tuple = ()
    flip_left_right: bool = False
    flip_up_down: bool = False
    # A user's own documents (--dataset=text_csv); see proto_tf/data/text_csv.py.
    text_columns: tuple = ()
    sequence_length: int = SEQUENCE_LENGTH
    alphabet: str = DBPEDIA_ALPHABET
    # Encoder (which ones apply depends on the dataset's kind).
    resnet_depth: int = 32
    resnet_filters: int = 16
    dense_units: tuple = (256,)
    downsample_stem: bool = False
    weight_decay: float = 0.0
    vdcnn_first_filters: int = 64
    vdcnn_block_filters: tuple = (64, 64, 128, 128, 256, 256, 512, 512)
    lstm_embedding_size: int = 64
    lstm_dropout: float = 0.5
    encoder_dropout: float = 0.0  # Images/text: dropout on the encoder output (Table 3).
    # A pretrained backbone instead of the Appendix A encoder (encoders/backbone.py),
    # frozen: its features are computed once and cached (training/features.py).
    backbone: str = ""
    backbone_pooling: str = "avg"
    feature_dtype: str = "float32"
    # True: the backbone is fine-tuned end to end with the heads (no cache), its
    # learning rate `backbone_learning_rate_scale` times the heads'.
    backbone_trainable: bool = False
    backbone_learning_rate_scale: float = 0.1
    # Running.
    strategy: str = "auto"
    checkpoint_every: int = 500
    eval_every: int = 1000
    log_every: int = 50
    eval_batch_size: int = 512
    # Stop when the median loss of the last 20 steps exceeds this many times the lowest
    # loss level seen (the first step's loss or a lower 20-step median); 0 disables.
    divergence_factor: float = 10.0
    deterministic: bool = False
    jit_compile: bool = False  # XLA for the per-replica step (BENCHMARKS.md: slower on CPU).

    @property
    def candidates_per_step(self):
        """Candidates the input pipeline samples (and the encoder encodes) per step."""
        return self.candidate_refresh or self.train_database_size

    def __post_init__(self):
        """Checks every value before any work; a bad one raises ConfigError naming its flag."""
        # Lists given by a caller become tuples (hashable, as stored in config.json);
        # the configuration is frozen after this.
        for name in ("dense_units", "vdcnn_block_filters", *USER_DATA_FIELDS):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_backbone(self)
        self._check_attention()
        self._check_training()
        self._check_encoders()
        self._check_data()

    def _check_attention(self):
        """The model's attention settings (`AttentionSettings` checks them again, for
        models built without a configuration)."""
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"--attention={self.attention!r} is not valid; valid: {', '.join(ATTENTIONS)}.")
        for name in ("attention_size", "value_size"):
            _check(self, name, getattr(self, name) > 0, "must be a positive integer")
        _check(self, "sparsity_weight", 0 <= self.sparsity_weight < math.inf, "must be >= 0")
        _check(self, "matching_loss_weight", 0 <= self.matching_loss_weight < math.inf, "must be >= 0")
        _check(self, "cosine_scale", 0 <= self.cosine_scale < math.inf, "must be >= 0 (0: the paper's dot product)")
        _check(
            self,
            "matching_warmup_steps",
            0 <= self.matching_warmup_steps < self.train_steps,
            f"must be in [0, --train_steps={self.train_steps}): the attention must train for some steps",
        )
        if self.attention == "none":
            for name in (
                "sparsity_weight",
                "matching_loss_weight",
                "matching_warmup_steps",
                "tied_head_init",
                "cosine_scale",
                "joint_encoding",
            ):
                default = ExperimentConfig.__dataclass_fields__[name].default
                _check(
                    self,
                    name,
                    getattr(self, name) == default,
                    f"has no effect with --attention=none (the baseline has no attention terms); leave it at {default}",
                )
        if not self.candidate_gradients or self.candidate_refresh:
            _check(
                self,
                "joint_encoding",
                self.joint_encoding,
                "has no effect with --nocandidate_gradients or --candidate_refresh "
                "(candidates are then encoded forward-only in a call of their own); "
                "leave it at True",
            )
        _check(
            self,
            "alpha_min",
            0 <= self.alpha_min <= self.alpha_max <= 1,
            f"must satisfy 0 <= alpha_min <= alpha_max ({self.alpha_max}) <= 1",
        )

    def _check_training(self):
        """The optimiser, the schedule, the databases of a step and the run's bookkeeping."""
        for name in (
            "train_steps",
            "batch_size",
            "train_database_size",
            "infer_database_size",
            "decay_steps",
            "checkpoint_every",
            "eval_every",
            "log_every",
            "eval_batch_size",
        ):
            _check(self, name, getattr(self, name) > 0, "must be a positive integer")
        _check(self, "seed", 0 <= self.seed < 2**32, "must be an integer in [0, 2**32)")
        _check(self, "model_dir", bool(self.model_dir and self.model_dir.strip()), "must name a folder")
        for name in ("learning_rate", "clip_value"):
            _check(
                self,
                name,
                math.isfinite(getattr(self, name)) and getattr(self, name) > 0,
                "must be a finite number > 0",
            )
        _check(self, "decay_rate", 0 < self.decay_rate <= 1, "must be in (0, 1]")
        _check(self, "weight_decay", 0 <= self.weight_decay < math.inf, "must be >= 0")
        _check(self, "batchnorm_batches", self.batchnorm_batches >= 0, "must be >= 0")
        _check(
            self,
            "divergence_factor",
            self.divergence_factor == 0 or self.divergence_factor > 1,
            "must be 0 (off) or > 1",
        )
        _check(
            self,
            "candidate_refresh",
            0 <= self.candidate_refresh <= self.train_database_size,
            f"must be in [0, train_database_size={self.train_database_size}]",
        )

    def _check_encoders(self):
        """The Appendix A encoders' sizes and dropouts."""
        for name in ("resnet_depth", "resnet_filters", "vdcnn_first_filters", "lstm_embedding_size"):
            _check(self, name, getattr(self, name) > 0, "must be a positive integer")
        for name in ("dense_units", "vdcnn_block_filters"):
            _check(
                self,
                name,
                len(getattr(self, name)) > 0 and all(size > 0 for size in getattr(self, name)),
                "must be positive integers",
            )
        for name in ("lstm_dropout", "encoder_dropout"):
            _check(self, name, 0 <= getattr(self, name) < 1, "must be in [0, 1)")

    def _check_data(self):
        """The data's options: noise, splits, a user's files, text and image shapes."""
        _check(self, "label_noise", 0 <= self.label_noise < 1, "must be in [0, 1)")
        _check(self, "validation_fraction", 0 <= self.validation_fraction < 1, "must be in [0, 1)")
        _check(self, "max_categories", self.max_categories > 0, "must be a positive integer")
        _check(self, "test_fraction", 0 < self.test_fraction < 1, "must be in (0, 1)")
        for name, datasets in USER_DATA_FIELDS.items():
            default = ExperimentConfig.__dataclass_fields__[name].default
            _check(
                self,
                name,
                self.dataset in datasets or getattr(self, name) == default,
                f"applies to --dataset={' or '.join(datasets)}, not --dataset={self.dataset}; leave it at {default!r}",
            )
        # VDCNN halves the sequence five times before its 8-max pooling.
        _check(
            self,
            "sequence_length",
            self.sequence_length >= 256,
            "must be at least 256 (the VDCNN encoder halves it five times before keeping the 8 largest positions)",
        )
        _check(
            self,
            "alphabet",
            0 < len(self.alphabet) == len(set(self.alphabet)) <= 255,
            "must hold 1 to 255 characters, each once (a repeated one would get two codes)",
        )
        _check(
            self,
            "image_size",
            self.image_size == () or (len(self.image_size) == 2 and min(self.image_size) > 0),
            "must be two positive integers H,W (or empty: the images' own size)",
        )

    @property
    def dataset_reads_user_files(self) -> bool:
        return dataset_info(self.dataset).user_data

    def data_options(self):
        """How a user's own files are read (None for the paper's datasets): the
        options of the dataset's kind, from this configuration."""
        info = dataset_info(self.dataset)
        return info.kind.user_options(self) if info.user_data else None


def _check_backbone(config: ExperimentConfig) -> None:
    """The pretrained backbone's options: each applies only with the one it needs."""
    _check(
        config, "backbone_pooling", config.backbone_pooling in POOLINGS, f"is not valid; valid: {', '.join(POOLINGS)}"
    )
    _check(
        config,
        "feature_dtype",
        config.feature_dtype in FEATURE_DTYPES,
        f"is not valid; valid: {', '.join(FEATURE_DTYPES)}",
    )
    _check(
        config,
        "backbone_learning_rate_scale",
        0 < config.backbone_learning_rate_scale < math.inf,
        "must be a number > 0 (0.1: the backbone learns at a tenth of the heads' rate)",
    )
    if not config.backbone:
        for name in ("backbone_pooling", "feature_dtype", "backbone_trainable"):
            default = ExperimentConfig.__dataclass_fields__[name].default
            _check(
                config, name, getattr(config, name) == default, f"applies with --backbone only; leave it at {default!r}"
            )
    if not config.backbone_trainable:
        _check(
            config,
            "backbone_learning_rate_scale",
            config.backbone_learning_rate_scale == 0.1,
            "applies with --backbone_trainable only; leave it at 0.1",
        )
    else:
        if dataset_info(config.dataset).kind.name == "text":
            raise ConfigError(
                "--backbone_trainable with text: fine-tuning a text preset is not built; its frozen features "
                "train (leave --backbone_trainable out)."
            )
        _check(
            config,
            "feature_dtype",
            config.feature_dtype == "float32",
            "applies to cached features; a fine-tuned backbone (--backbone_trainable) caches none",
        )
    if config.backbone:
        # A backbone's BatchNorm layers stay in inference mode (keras-hub's advice);
        # re-estimating their statistics would change the pretrained model.
        _check(config, "batchnorm_batches", config.batchnorm_batches == 0, "must be 0 with --backbone")


def _check(config, name, valid, rule):
    if not valid:
        raise ConfigError(f"--{name}={getattr(config, name)!r} {rule}.")


def _check_some_left_for_training(config, train_examples):
    if train_examples < 1:
        raise ConfigError(
            f"--validation_fraction={config.validation_fraction} leaves no training examples of "
            f"{config.dataset}; lower it (e.g. --validation_fraction=0.1)."
        )


def check_against_data(config, train_examples):
    """Checks the values that depend on the training split's size (after the
    validation carve): every database and batch must fit in it."""
    _check_some_left_for_training(config, train_examples)
    for name in ("batch_size", "train_database_size", "infer_database_size"):
        value = getattr(config, name)
        if value > train_examples:
            raise ConfigError(
                f"--{name}={value} exceeds the {train_examples} training examples of "
                f"{config.dataset} (after holding out --validation_fraction="
                f"{config.validation_fraction}); valid: 1..{train_examples}."
            )


def fit_to_data(config, train_examples, report=print):
    """For a user's own data, whose size a flagfile cannot know: `config` with the batch
    and database sizes lowered to the training split's size where they exceed it (each
    change reported). The paper's datasets are returned unchanged (and checked by
    `check_against_data`)."""
    if not config.dataset_reads_user_files:
        return config
    _check_some_left_for_training(config, train_examples)
    changes = {}
    for name in ("batch_size", "train_database_size", "infer_database_size"):
        if getattr(config, name) > train_examples:
            changes[name] = train_examples
            report(
                f"--{name}={getattr(config, name)} is above the {train_examples} training "
                f"examples: using {train_examples}."
            )
    return dataclasses.replace(config, **changes) if changes else config
