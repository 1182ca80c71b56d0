"""The kinds of data (tables, images, texts): one object each, asked by serving, analysis
and the command line (`base.DataKind`)."""

from proto_tf.data.kinds.base import EXPORT_DATA_FILE, DataKind, ServingInputs
from proto_tf.data.kinds.features_kind import FeaturesKind
from proto_tf.data.kinds.image_kind import IMAGE_BYTES_SIGNATURE, ImageKind
from proto_tf.data.kinds.table_kind import TableKind
from proto_tf.data.kinds.text_kind import TextKind

KINDS = {kind.name: kind for kind in (TableKind(), ImageKind(), TextKind())}


def kind_named(name: str) -> DataKind:
    """The DataKind called `name` ("tabular", "image" or "text")."""
    if name not in KINDS:
        raise ValueError(f"unknown kind of data {name!r}; known: {', '.join(KINDS)}.")
    return KINDS[name]


def kind_of_signature(specs: dict) -> DataKind:
    """The kind of data a signature takes, from its input names (exports written before
    the kind was stored in `EXPORT_DATA_FILE`)."""
    if "images" in specs:
        return KINDS["image"]
    return KINDS["text"] if "texts" in specs else KINDS["tabular"]


__all__ = [
    "EXPORT_DATA_FILE",
    "IMAGE_BYTES_SIGNATURE",
    "KINDS",
    "DataKind",
    "FeaturesKind",
    "ServingInputs",
    "kind_named",
    "kind_of_signature",
]
