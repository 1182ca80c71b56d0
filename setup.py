"""Installs the proto_tf library, its command-line tools (`proto-tf-*`), the experiment
flagfiles (flags/ -> proto_tf/flagfiles) and the UCI Adult files (data/adult ->
proto_tf/adult_data), so that a plain `pip install .` works outside the checkout."""

import re

import setuptools

with open("proto_tf/__init__.py") as handle:
    VERSION = re.search(r'^__version__ = "([^"]+)"', handle.read(), re.M).group(1)

COMMANDS = (
    "train",
    "export",
    "evaluate",
    "explain",
    "predict",
    "label_noise",
    "report",
    "benchmark",
    "reference",
    "audit",
    "save_encoder",
    "transfer",
)

setuptools.setup(
    name="proto_tf",
    version=VERSION,
    description=("Attention-based prototypical learning (ProtoAttend) in Keras 3 / TensorFlow 2."),
    packages=setuptools.find_packages(include=["proto_tf", "proto_tf.*"])
    + [
        "proto_tf.flagfiles",
        "proto_tf.flagfiles.base",
        "proto_tf.flagfiles.datasets",
        "proto_tf.flagfiles.small",
        "proto_tf.adult_data",
    ],
    package_dir={
        "proto_tf.flagfiles": "flags",
        "proto_tf.flagfiles.base": "flags/base",
        "proto_tf.flagfiles.datasets": "flags/datasets",
        "proto_tf.flagfiles.small": "flags/small",
        "proto_tf.adult_data": "data/adult",
    },
    package_data={
        "proto_tf.flagfiles": ["*.cfg"],
        "proto_tf.flagfiles.base": ["*.cfg"],
        "proto_tf.flagfiles.datasets": ["*.cfg"],
        "proto_tf.flagfiles.small": ["*.cfg"],
        "proto_tf.adult_data": ["adult.data", "adult.test", "adult.names", "README.md"],
    },
    entry_points={
        "console_scripts": [f"proto-tf-{name.replace('_', '-')} = proto_tf.cli.{name}:run" for name in COMMANDS]
    },
    python_requires=">=3.10",
    # Ranges, not pins: the exact tested versions are in requirements.txt. TensorFlow
    # itself is left to requirements.txt so GPU users can pick tensorflow[and-cuda].
    install_requires=[
        "keras>=3.10",
        "numpy>=1.26",
        "absl-py>=2.0",
        "matplotlib>=3.8",
    ],
    # compare: the scikit-learn references of run/reference.py and cleanlab beside
    # run/audit.py --compare_cleanlab (not needed otherwise).
    # (`run/benchmark.py --suite=authors` also needs tf-keras, installed with --no-deps:
    # its own requirement would add the full `tensorflow` over `tensorflow-cpu`.)
    extras_require={
        "tfds": ["tensorflow-datasets>=4.9"],
        # Pretrained backbones (--backbone); install with --no-deps beside tensorflow-cpu
        # (requirements-no-deps.txt): keras-hub asks for tensorflow-text, which asks for
        # the full `tensorflow` package.
        "backbones": ["keras-hub>=0.32"],
        "compare": ["scikit-learn>=1.5", "cleanlab>=2.7", "faiss-cpu>=1.8"],
    },
)
