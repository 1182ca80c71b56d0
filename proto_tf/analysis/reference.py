"""A reference a user of such a tool would pick instead, on the same split: scikit-learn's
gradient boosting for tables, a support-vector machine for images (optional extra:
`pip install proto_tf[compare]`)."""

import numpy as np

from proto_tf.data.common import LoadedDataset


def reference_accuracy(dataset: LoadedDataset, seed: int = 0) -> dict:
    """Test accuracy of the reference fitted on `dataset.train` (the same examples and
    features ProtoAttend trains on: a table's feature vectors, an image's pixels).

    Tables: `HistGradientBoostingClassifier` with its defaults. Images: `SVC` (RBF
    kernel, its defaults) on pixels scaled to [0, 1].
    """
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.svm import SVC
    except ImportError as error:
        raise ImportError("the reference needs scikit-learn: pip install proto_tf[compare]") from error
    train, test, kind = dataset.train, dataset.test, dataset.info.kind
    references = {
        "tabular": (
            lambda: HistGradientBoostingClassifier(random_state=seed),
            "sklearn HistGradientBoostingClassifier",
        ),
        "image": (SVC, "sklearn SVC (RBF)"),
    }  # By kind: the peer a user of that kind of data would pick.
    if kind.name not in references:
        raise ValueError(f"no reference for {kind.name} data.")
    make, name = references[kind.name]
    model = make()
    model.fit(kind.reference_features(train.inputs), train.labels)
    accuracy = float(np.mean(model.predict(kind.reference_features(test.inputs)) == test.labels))
    return {"reference": name, "train_examples": len(train), "test_examples": len(test), "accuracy": accuracy}
