"""The paper's reported numbers (Tables 2 and 3), as data for side-by-side reports.

Keys match the flagfile names in flags/: `<dataset>_<baseline|softmax|sparsemax>` and
`<dataset>_sparsemax_sparsity`; Table 3 uses `cifar10_noise<NN>_<method>`.
Accuracies are in percent; prototype counts are the medians at 50/90/95 % of the weight.
"""

TABLE_2 = {
    "mnist_baseline": {"accuracy": 99.70},
    "mnist_softmax": {"accuracy": 99.66, "prototypes": (365, 1324, 1648)},
    "mnist_sparsemax": {"accuracy": 99.69, "prototypes": (2, 4, 5)},
    "fashion_mnist_baseline": {"accuracy": 94.74},
    "fashion_mnist_softmax": {"accuracy": 94.42, "prototypes": (712, 2320, 2702)},
    "fashion_mnist_sparsemax": {"accuracy": 94.42, "prototypes": (4, 10, 11)},
    "fashion_mnist_sparsemax_sparsity": {"accuracy": 94.47, "prototypes": (1, 2, 2)},
    "cifar10_baseline": {"accuracy": 91.97},
    "cifar10_softmax": {"accuracy": 91.69, "prototypes": (317, 1453, 1898)},
    "cifar10_sparsemax": {"accuracy": 91.44, "prototypes": (5, 14, 16)},
    "cifar10_sparsemax_sparsity": {"accuracy": 91.26, "prototypes": (2, 3, 4)},
    "dbpedia_baseline": {"accuracy": 98.25},
    "dbpedia_softmax": {"accuracy": 98.20, "prototypes": (63, 190, 225)},
    "dbpedia_sparsemax": {"accuracy": 97.74, "prototypes": (2, 4, 4)},
    "adult_baseline": {"accuracy": 85.68},
    "adult_softmax": {"accuracy": 85.64, "prototypes": (2263, 9610, 12419)},
    "adult_sparsemax": {"accuracy": 85.58, "prototypes": (20, 57, 67)},
    "adult_sparsemax_sparsity": {"accuracy": 85.41, "prototypes": (3, 6, 7)},
}

TABLE_3 = {  # CIFAR-10 test accuracy (%) against the label-noise ratio.
    "cifar10_noise80_baseline": {"accuracy": 57.02},
    "cifar10_noise80_dropout": {"accuracy": 56.76},
    "cifar10_noise80_sparsemax_sparsity": {"accuracy": 60.50},
    "cifar10_noise60_baseline": {"accuracy": 71.27},
    "cifar10_noise60_dropout": {"accuracy": 72.15},
    "cifar10_noise60_sparsemax_sparsity": {"accuracy": 74.67},
    "cifar10_noise40_baseline": {"accuracy": 77.47},
    "cifar10_noise40_dropout": {"accuracy": 78.99},
    "cifar10_noise40_sparsemax_sparsity": {"accuracy": 80.04},
}

# Section 4.2.2: error rates reached by refraining from a fraction of predictions.
CONFIDENCE_CLAIMS = {
    "mnist": {"error": 0.21, "refrained": 0.45},
    "dbpedia": {"error": 0.91, "refrained": 3.0},
    "adult": {"error": 12.0, "refrained": 10.0},
}

REPORTED = {**TABLE_2, **TABLE_3}
