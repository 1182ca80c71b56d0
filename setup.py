"""Installs the proto_tf library (the run/ scripts and flags/ stay in the checkout)."""

import setuptools

setuptools.setup(
    name="proto_tf",
    version="0.1.0",
    description=(
        "Attention-based prototypical learning (ProtoAttend) in Keras 3 / TensorFlow 2."
    ),
    packages=setuptools.find_packages(include=["proto_tf", "proto_tf.*"]),
    python_requires=">=3.10",
    # Ranges, not pins: the exact tested versions are in requirements.txt. TensorFlow
    # itself is left to requirements.txt so GPU users can pick tensorflow[and-cuda].
    install_requires=[
        "keras>=3.10",
        "numpy>=1.26",
        "absl-py>=2.0",
        "tensorflow-datasets>=4.9",
    ],
)
