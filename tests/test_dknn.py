import numpy as np

from proto_tf.analysis import dknn


def test_nearest_labels_and_nonconformity_by_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, 50)
    queries = rng.normal(size=(7, 3))
    got = dknn.nearest_labels(train, labels, queries, k=5, batch_size=3)
    for row, query in zip(got, queries):
        nearest = np.argsort(((train - query) ** 2).sum(-1))[:5]
        assert sorted(row) == sorted(labels[nearest])
    scores = dknn.nonconformity([np.array([[0, 0, 1]]), np.array([[2, 0, 0]])], 3)
    np.testing.assert_array_equal(scores, [[1 + 1, 2 + 3, 3 + 2]])


def test_separable_data_gets_confident_right_answers():
    rng = np.random.default_rng(1)
    centers = np.eye(3) * 10

    def sample(n):
        y = rng.integers(0, 3, n)
        return centers[y] + rng.normal(size=(n, 3)), y

    (train, y_train), (calibration, y_calibration), (test, y_test) = sample(300), sample(100), sample(50)
    model = dknn.DeepKNN([train], y_train, [calibration], y_calibration, num_classes=3, k=10)
    predictions, confidence, credibility = model.predict([test])
    assert (predictions == y_test).mean() == 1.0
    assert confidence.min() > 0.9 and credibility.min() > 0.05
    # Equidistant from all classes, its neighbours disagree more than any calibration
    # point's did: no label is credible.
    far = np.full((1, 3), 5.0)
    _, _, far_credibility = model.predict([far])
    assert far_credibility[0] < credibility.min()
