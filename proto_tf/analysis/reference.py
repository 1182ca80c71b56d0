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
    train, test = dataset.train, dataset.test
    kind = dataset.info.kind
    if kind == "tabular":
        model, name = HistGradientBoostingClassifier(random_state=seed), "sklearn HistGradientBoostingClassifier"
        x_train, x_test = train.inputs, test.inputs
    elif kind == "image":
        model, name = SVC(), "sklearn SVC (RBF)"
        x_train = train.inputs.reshape(len(train), -1).astype(np.float32) / 255.0
        x_test = test.inputs.reshape(len(test), -1).astype(np.float32) / 255.0
    else:
        raise ValueError(f"no reference for {kind} data.")
    model.fit(x_train, train.labels)
    accuracy = float(np.mean(model.predict(x_test) == test.labels))
    return {"reference": name, "train_examples": len(train), "test_examples": len(test), "accuracy": accuracy}
