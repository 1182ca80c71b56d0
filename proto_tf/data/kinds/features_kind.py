"""Feature vectors of a frozen backbone: what the model reads on the frozen path.

The data's own kind (images, texts, tables) still serves, explains and reads files
(`LoadedDataset.features.info`); this kind only says that the model's inputs are
features, so nothing shows them as pictures or reads them as a table.
"""

import tensorflow as tf

from proto_tf.data.kinds.base import DataKind, ServingInputs


class FeaturesKind(DataKind):
    """float32 feature vectors `[F]` of a backbone, read by an identity encoder."""

    name = "features"
    encoder = "features"

    def serving_endpoints(self, info, preprocess):
        """`features` (float32 `[B, F]`, computed by the backbone elsewhere) through
        `preprocess`: for heads trained on features given directly."""
        spec = tf.TensorSpec([None, *info.input_shape], tf.float32, name="features")
        return {"": ServingInputs({"features": spec}, lambda raw: preprocess(raw["features"]))}
