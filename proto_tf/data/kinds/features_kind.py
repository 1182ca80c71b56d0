"""Feature vectors of a frozen backbone: what the model reads on the frozen path.

The data's own kind (images, texts, tables) still serves, explains and reads files
(`LoadedDataset.features.info`); this kind only says that the model's inputs are
features, so nothing shows them as pictures or reads them as a table.
"""

from proto_tf.data.kinds.base import DataKind


class FeaturesKind(DataKind):
    """float32 feature vectors `[F]` of a backbone, read by an identity encoder."""

    name = "features"
    encoder = "features"
