"""ProtoAttend (attention-based prototypical learning) in Keras 3 / TensorFlow 2."""

__version__ = "0.2.0"

from proto_tf import metrics
from proto_tf.attention import NORMALIZATIONS, PrototypeAttention
from proto_tf.model import ATTENTIONS, PrototypeDatabase, ProtoAttend
from proto_tf.sparsemax import sparsemax

__all__ = [
    "__version__",
    "ATTENTIONS",
    "NORMALIZATIONS",
    "PrototypeAttention",
    "PrototypeDatabase",
    "ProtoAttend",
    "metrics",
    "sparsemax",
]
