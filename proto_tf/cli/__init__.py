"""Command-line entry points (installed as `proto-tf-*` console scripts; `run/*.py`
call the same functions from a checkout)."""

import os

# Before any command imports TensorFlow: no C++ start-up lines on the console (a user's
# own TF_CPP_MIN_LOG_LEVEL is kept).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
