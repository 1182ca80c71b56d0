"""Evaluation, explanations, deep k-NN, the paper's numbers, comparison tables, plots and benchmarks."""
