"""absl flags for an ExperimentConfig, with the experiment's flagfile loaded first.

Read in this order, each overriding the one before: `flags/base/paper.cfg` (what every
experiment of the paper shares), `flags/datasets/D.cfg` (what every experiment of dataset D
shares), the experiment's own file, `flags/small/D.cfg` with `--small`, then the command
line. The experiment's own file is `flags/NAME.cfg` for `--experiment=NAME`; for
`--dataset=D --attention=A` it is `flags/D_A.cfg` (`D_baseline.cfg` for attention=none),
holding only what that row of the paper changes, and where D has none for A (a dataset whose
rows differ only in the attention) the dataset's file alone is read.
"""

import dataclasses
import os
import sys

from absl import flags

from proto_tf import normalizations
from proto_tf.data.registry import DATASETS
from proto_tf.encoders.backbone import POOLINGS
from proto_tf.errors import USAGE_EXIT_STATUS, ConfigError
from proto_tf.training.config import ATTENTIONS, FEATURE_DTYPES, NAME_LIST_FIELDS, ExperimentConfig
from proto_tf.training.distribute import STRATEGIES


def _flagfiles_dir():
    """`flags/` of a checkout, else the copy installed with the package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkout = os.path.join(os.path.dirname(package), "flags")
    return checkout if os.path.isdir(checkout) else os.path.join(package, "flagfiles")


FLAGS_DIR = _flagfiles_dir()
_ENUMS = {
    "dataset": list(DATASETS),
    "attention": list(ATTENTIONS),
    "strategy": list(STRATEGIES),
    "backbone_pooling": list(POOLINGS),
    "feature_dtype": list(FEATURE_DTYPES),
}
_HELP = {
    "dataset": "A dataset of Table 1, or your own data: csv, image_folder or text_csv (docs/own_data.md).",
    "attention": "Attention normalisation; none trains the baseline encoder.",
    "data_dir": "Folder of the dataset's files (default: the dataset's usual place, see docs/training.md).",
    "model_dir": "Where checkpoints, logs and summary.json go (default runs/<experiment>[_small]).",
    "download": "Let TFDS download MNIST, Fashion-MNIST or CIFAR-10 into --data_dir.",
    "train_steps": "Training steps (optimizer updates) to reach; a run can be extended by raising it.",
    "batch_size": "Training examples per step, over all replicas (B).",
    "learning_rate": "Adam's initial learning rate (> 0).",
    "decay_rate": "Learning-rate decay factor per --decay_steps steps, in (0, 1]; continuous: "
    "lr * rate^(step / decay_steps).",
    "decay_steps": "Steps over which the learning rate decays by --decay_rate (> 0).",
    "clip_value": "Element-wise gradient clipping bound (> 0).",
    "seed": "Seed of the model's initialisation and of every step's batch, candidates, augmentation and alpha.",
    "train_database_size": "Candidates sampled at every training step (D_train).",
    "infer_database_size": "Candidates in the evaluation/inference database (D_infer), 1 to the training split's size.",
    "attention_size": "Size of keys and queries (16 in every experiment of the paper).",
    "value_size": "Size of values (64; 128 for CIFAR-10, 16 for Adult).",
    "sparsity_weight": "Lambda of the entropy regulariser (Eq. 2), >= 0; 0 disables it.",
    "matching_loss_weight": "Weight of Eq. 1's prototype and mixed terms, >= 0; 1 is the "
    "paper. An ablation knob: 0 trains with the plain term alone.",
    "matching_warmup_steps": "Steps at the start that train the plain term alone (then Eq. 1 "
    'and Eq. 2 in full); 0 is the paper. For heavy label noise (docs/training.md, "Attention hubs").',
    "tied_head_init": "Start the key head with the query head's weights (the first logits a "
    "similarity of encodings); off is the paper. For heavy label noise, with --matching_warmup_steps.",
    "cosine_scale": "0 (the paper): candidates scored by q . k / sqrt(d). s > 0: by s times the "
    'cosine of q and k, so no key\'s norm lifts it for every query (docs/training.md, "Attention hubs").',
    "alpha_min": "Lower end of the uniform range alpha of Eq. 1's third term is drawn from, per step, in [0, 1].",
    "alpha_max": "Upper end of alpha's range, in [alpha_min, 1].",
    "candidate_gradients": "Back-propagate through the candidates' encoding (the paper); "
    "--nocandidate_gradients encodes them forward-only.",
    "joint_encoding": "With candidate gradients: encode inputs and candidates in one encoder "
    "call (BatchNorm statistics over both); --nojoint_encoding uses two calls, each with its "
    "own batch statistics, as the authors' code does.",
    "candidate_refresh": "0 (the paper): encode all D_train candidates every step. R > 0: "
    "encode R fresh candidates per step (forward-only) into a memory of the last D_train "
    "candidate encodings and attend over it.",
    "batchnorm_batches": "Before evaluating and before the last checkpoint, set BatchNorm's "
    "moving statistics to the mean batch statistics of the first this-many training steps' "
    "encoder batches; 0 keeps the moving averages.",
    "label_noise": "Share of training labels (and validation labels) replaced by another "
    "class (Table 3), in [0, 1); test labels stay clean.",
    "drop_rows": "A CSV of training rows to leave out (train_row; run/audit.py --drop writes it).",
    "relabel_rows": "A CSV of training rows and their new labels (train_row,label; run/audit.py --relabel writes it).",
    "validation_fraction": "Share of the training file held out (fixed seed) for checkpoint selection, in [0, 1).",
    "label_column": "--dataset=csv or text_csv: the column holding the class (default: the last column).",
    "categorical_columns": "--dataset=csv: comma-separated columns to read as categories "
    "(default: a column is numeric when every non-missing value is a number).",
    "numeric_columns": "--dataset=csv: comma-separated columns to read as numbers.",
    "ignore_columns": "--dataset=csv: comma-separated columns to leave out (e.g. an id).",
    "max_categories": "--dataset=csv: most distinct values a categorical column may have.",
    "test_fraction": "--dataset=csv, image_folder or text_csv: share of train.csv (train/) held out "
    "(fixed seed) as the test split when there is no test.csv (test/), in (0, 1).",
    "image_size": "--dataset=image_folder: H,W to resize every image to (default: the "
    "training images' own size, when they all share one).",
    "flip_left_right": "--dataset=image_folder: random left-right flips in training.",
    "flip_up_down": "--dataset=image_folder: random up-down flips in training.",
    "text_columns": "--dataset=text_csv: comma-separated columns joined (by a space) into the "
    "text (default: every column but the label).",
    "sequence_length": "--dataset=text_csv: characters kept per text (448, as DBPedia).",
    "alphabet": "--dataset=text_csv: the characters the quantiser knows (DBPedia's 69 by "
    "default); texts are lower-cased, other characters map to 0.",
    "resnet_depth": "ResNet depth, 6n + 2 (32 for the MNISTs and Fruits, 50 for CIFAR-10 and ISIC).",
    "resnet_filters": "Filters of the ResNet's first stage (16; doubled at each stage).",
    "dense_units": "Comma-separated widths of the dense + ReLU + LayerNorm layers on top of the convolutional encoder.",
    "downsample_stem": "Stride-2 conv + stride-2 max-pool stem for large images (Fruits, ISIC).",
    "weight_decay": "L2 factor on convolution kernels, >= 0 (1e-4 for Fruits, else 0).",
    "vdcnn_first_filters": "Filters of VDCNN's first convolution (DBPedia).",
    "vdcnn_block_filters": "Comma-separated filters of VDCNN's eight convolutional blocks.",
    "lstm_embedding_size": "Width of the Adult LSTM's embedding and cells.",
    "lstm_dropout": "Dropout of the Adult LSTM's inputs and output, in [0, 1).",
    "encoder_dropout": "Dropout on the image/text encoder output, in [0, 1) (Table 3's dropout baseline).",
    "backbone": "A pretrained backbone as the encoder, frozen (its features computed once and cached in "
    "the run): a keras-hub preset folder, a preset name or kaggle:// / hf:// handle (with --download), "
    "or a .keras model mapping inputs to features (docs/own_data.md).",
    "backbone_trainable": "Fine-tune the --backbone end to end with the heads (no feature cache; "
    "candidates pass through it every step) instead of freezing it.",
    "backbone_learning_rate_scale": "With --backbone_trainable: the backbone's learning rate as a "
    "multiple of the heads'.",
    "backbone_pooling": "How a backbone's feature map becomes one vector: avg or max over its positions.",
    "feature_dtype": "How the backbone's cached features are stored: float32, or float16 (half the memory).",
    "strategy": "auto, one_device, mirrored, or multi_worker (from TF_CONFIG).",
    "checkpoint_every": "Steps between checkpoints (the last two are kept).",
    "eval_every": "Steps between validation evaluations (the best one is kept in best/).",
    "log_every": "Steps between TensorBoard and console logs (values are means over them).",
    "eval_batch_size": "Examples per batch when evaluating and encoding databases.",
    "divergence_factor": "Stop training when the median loss of the last 20 steps exceeds this "
    "many times the lowest loss level seen so far (the first step's loss or a lower 20-step "
    "median); 0 disables the check. NaN or infinite gradients and weights always stop it.",
    "deterministic": "Use TensorFlow's deterministic ops (slower; for bit-exact comparisons).",
    "jit_compile": "Compile the training step with XLA (slower on CPUs; see BENCHMARKS.md).",
}


def define_flags(flag_values):
    """Defines one flag per ExperimentConfig field, plus --experiment and --small."""
    defaults = ExperimentConfig()
    for field in dataclasses.fields(ExperimentConfig):
        name, default = field.name, getattr(defaults, field.name)
        help_text = _HELP[name]  # Every field has a written help line (a test checks).
        if name in ("model_dir", "label_column"):
            flags.DEFINE_string(name, None, help_text, flag_values=flag_values)
        elif name in NAME_LIST_FIELDS:
            flags.DEFINE_list(name, [], help_text, flag_values=flag_values)
        elif name in _ENUMS:
            flags.DEFINE_enum(name, default, _ENUMS[name], help_text, flag_values=flag_values)
        elif isinstance(default, bool):
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif isinstance(default, tuple):
            flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
    flags.DEFINE_string(
        "experiment",
        None,
        "Flagfile name in flags/ (default <dataset>_<attention>, where the dataset has one).",
        flag_values=flag_values,
    )
    flags.DEFINE_bool("small", False, "Apply flags/small/<dataset>.cfg: a CPU-sized run.", flag_values=flag_values)


def experiment_name(dataset, attention):
    return f"{dataset}_{'baseline' if attention == 'none' else attention}"


def _default_experiment(dataset, attention):
    """`<dataset>_<attention>`, or for a normalisation without flagfiles of its own (not
    in the paper: entmax15) the dataset's flagfile of the normalisation whose settings it
    takes (`Normalization.settings_of`); the command line's --attention, parsed after the
    flagfile, then sets the attention."""
    name = experiment_name(dataset, attention)
    if not has_experiment(name) and attention in normalizations.names():
        shared = normalizations.get(attention).settings_of
        if shared:
            return experiment_name(dataset, shared)
    return name


def has_experiment(name: str) -> bool:
    """True when `flags/<name>.cfg` exists (an experiment `--experiment=name` can run)."""
    return os.path.isfile(os.path.join(FLAGS_DIR, name + ".cfg"))


def parse_with_flagfiles(argv, flag_values):
    """absl flags parser that puts the experiment's flagfiles before the user's flags.

    Exits with a one-line message (valid values included) on a bad flag.
    """
    try:
        return _parse_with_flagfiles(argv, flag_values)
    except flags.Error as error:
        _exit_usage(f"{error} (run with --helpfull to list every flag)")


def _parse_with_flagfiles(argv, user):
    user(argv, known_only=True)
    if not user.experiment and not user["dataset"].present:
        # The library's default dataset would start the paper's longest Adult run.
        _exit_usage(
            "give --dataset=NAME --attention=ATTENTION (e.g. --dataset=adult --attention=sparsemax "
            f"--small) or --experiment=NAME; datasets: {', '.join(DATASETS)}; attentions: "
            f"{', '.join(ATTENTIONS)}."
        )
    name = user.experiment or _default_experiment(user.dataset, user.attention)
    flagfile = os.path.join(FLAGS_DIR, name + ".cfg")
    if os.path.isfile(flagfile):
        stated = _stated_dataset_and_attention(flagfile)
    elif user.experiment:
        # `D_A` of a dataset whose rows differ only in the attention: its file alone.
        stated = _dataset_and_attention_of(name)
        if stated is None:
            valid = sorted(f[:-4] for f in os.listdir(FLAGS_DIR) if f.endswith(".cfg"))
            _exit_usage(
                f"no flagfile {flagfile}; valid experiments: {', '.join(valid)} (or <dataset>_<attention> "
                "for a dataset of flags/datasets/ without a file for that attention)."
            )
    else:
        stated = {}
    if user.experiment:
        _check_experiment_agrees(user, flagfile, stated)
    dataset = stated.get("dataset", user.dataset)
    # The settings all experiments share first, then the dataset's, then the experiment's own.
    prefix = [f"--flagfile={os.path.join(FLAGS_DIR, 'base', 'paper.cfg')}"]
    prefix.append(f"--flagfile={os.path.join(FLAGS_DIR, 'datasets', dataset + '.cfg')}")
    prefix += [f"--flagfile={flagfile}"] if os.path.isfile(flagfile) else [f"--{k}={v}" for k, v in stated.items()]
    user.unparse_flags()
    user([argv[0]] + prefix + argv[1:], known_only=True)
    if user.small:
        prefix.append(f"--flagfile={os.path.join(FLAGS_DIR, 'small', user.dataset + '.cfg')}")
    user.unparse_flags()
    return user([argv[0]] + prefix + argv[1:])


def _dataset_and_attention_of(name):
    """`{"dataset": D, "attention": A}` for an experiment name `D_A` (`D_baseline`: none)
    of a dataset with a file in flags/datasets/, else None."""
    for dataset in DATASETS:
        row = name[len(dataset) + 1 :] if name.startswith(dataset + "_") else None
        attention = "none" if row == "baseline" else row
        if attention in ATTENTIONS and os.path.isfile(os.path.join(FLAGS_DIR, "datasets", dataset + ".cfg")):
            return {"dataset": dataset, "attention": attention}
    return None


def _stated_dataset_and_attention(flagfile):
    """`{"dataset": ..., "attention": ...}` as an experiment's flagfile sets them."""
    with open(flagfile) as handle:
        return dict(
            line.strip()[2:].split("=", 1) for line in handle if line.startswith(("--dataset=", "--attention="))
        )


def _check_experiment_agrees(user, flagfile, stated):
    """Refuses a --dataset or --attention on the command line that contradicts the
    experiment's flagfile (its other flags would be mixed into another dataset's run)."""
    for name in ("dataset", "attention"):
        if user[name].present and name in stated and user[name].value != stated[name]:
            _exit_usage(
                f"--{name}={user[name].value} contradicts --experiment={user.experiment}, whose "
                f"flagfile {flagfile} sets --{name}={stated[name]}; give --experiment alone, or "
                f"--dataset and --attention without it."
            )


def _exit_usage(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_EXIT_STATUS)


def config_for(args):
    """The ExperimentConfig that `run/train.py ARGS` would train, parsed into a fresh
    FlagValues (so callers can build several configs in one process)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    parse_with_flagfiles(["train.py"] + list(args), flag_values)
    return config_from_flags(flag_values)


def config_from_flags(flag_values):
    """The ExperimentConfig described by the parsed flags."""
    values = {}
    for field in dataclasses.fields(ExperimentConfig):
        value = flag_values[field.name].value
        if field.name in NAME_LIST_FIELDS:
            value = tuple(value)
        elif isinstance(getattr(ExperimentConfig(), field.name), tuple):
            value = _integers(field.name, value)
        values[field.name] = value
    if values["model_dir"] is None:
        name = flag_values.experiment or experiment_name(values["dataset"], values["attention"])
        values["model_dir"] = os.path.join("runs", name + ("_small" if flag_values.small else ""))
    return ExperimentConfig(**values)


def _integers(name, values):
    """A list flag of integers (`--image_size=28,28`), or a ConfigError naming it."""
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ConfigError(
            f"--{name}={','.join(values)} must be comma-separated integers, e.g. --{name}=28,28."
        ) from None
