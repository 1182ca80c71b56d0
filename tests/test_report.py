import pytest

from proto_tf.analysis import comparison


def _summary(**config):
    base = {"dataset": "adult", "attention": "sparsemax", "sparsity_weight": 0.0,
            "label_noise": 0.0, "encoder_dropout": 0.0, "train_database_size": 4096,
            "infer_database_size": 15360, "batch_size": 128}  # fmt: skip
    base.update(config)
    test = {"accuracy": 0.8512, "median_prototypes_50": 18.0, "median_prototypes_90": 50.0,
            "median_prototypes_95": 61.0}  # fmt: skip
    return {"config": base, "steps": 11500, "train_seconds": 1200.0, "test_last": test}


def test_experiment_keys_match_the_paper_tables():
    assert comparison.experiment_key({"dataset": "adult", "attention": "none"}) == "adult_baseline"
    assert comparison.experiment_key(
        {"dataset": "fashion_mnist", "attention": "sparsemax", "sparsity_weight": 3e-4}
    ) == "fashion_mnist_sparsemax_sparsity"
    assert comparison.experiment_key(
        {"dataset": "cifar10", "attention": "none", "label_noise": 0.6, "encoder_dropout": 0.3}
    ) == "cifar10_noise60_dropout"


def test_row_and_table_show_the_gap():
    row = comparison.comparison_row(_summary())
    assert row["paper_accuracy"] == 85.58 and row["accuracy"] == 85.12 and row["gap"] == -0.46
    assert row["paper_prototypes"] == (20, 57, 67) and row["prototypes"] == (18, 50, 61)
    table = comparison.markdown_table([row], hardware="test machine")
    assert "| adult_sparsemax | 85.58 | 85.12 | -0.46 | 20/57/67 | 18/50/61 | 11500 | 128 | 4096/15360 | 20.0 |" in table
    assert "test machine" in table


def test_rows_name_the_cheaper_training_modes():
    fast = comparison.comparison_row(_summary(candidate_gradients=False))
    memory = comparison.comparison_row(_summary(candidate_gradients=True, candidate_refresh=128))
    assert fast["experiment"] == "adult_sparsemax (forward-only candidates)"
    assert memory["experiment"] == "adult_sparsemax (memory, 128 fresh/step)"
    ablation = comparison.comparison_row(_summary(matching_loss_weight=0.25))
    assert ablation["experiment"] == "adult_sparsemax (ablation: matching terms x0.25)"
    assert fast["paper_accuracy"] == 85.58  # Still compared with the paper's row.


def test_missing_summary_names_the_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        comparison.read_summary(str(tmp_path))
