"""The public API is typed: every public function and method of the modules a user
imports (README, "The library") annotates its parameters and its return value."""

import ast
import os

import pytest

import proto_tf

PUBLIC_MODULES = (
    "attention",
    "baseline",
    "blockwise",
    "classifier",
    "metrics",
    "model",
    "sparsemax",
    "streaming",
    "calibration",
    "encoders/layers",
    "encoders/lstm",
    "encoders/resnet",
    "encoders/vdcnn",
    "data/candidates",
    "data/noise",
    "data/registry",
    "evaluation",
    "analysis/evaluate_run",
    "analysis/trained_run",
    "analysis/audit",
    "analysis/audit_comparison",
    "serving/warmup",
    "data/raw_examples",
    "json_files",
    "serving/export",
    "serving/sharding",
    "training/trainer",
    "training/run_store",
    "work_progress",
)


def _untyped(path):
    """`name:line` of each public module function or public-class method lacking a hint."""
    tree = ast.parse(open(path).read())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            functions += [item for item in node.body if isinstance(item, ast.FunctionDef)]
    for node in functions:
        if node.name.startswith("_") and node.name != "__init__":
            continue
        arguments = [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
        if any(a.annotation is None for a in arguments) or (node.returns is None and node.name != "__init__"):
            yield f"{node.name}:{node.lineno}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_functions_have_type_hints(module):
    path = os.path.join(os.path.dirname(proto_tf.__file__), module + ".py")
    assert list(_untyped(path)) == []


def test_every_exported_name_lives_in_a_typed_module():
    typed = {"proto_tf." + module.replace("/", ".") for module in PUBLIC_MODULES}
    for name, module in proto_tf._EXPORTS.items():
        assert module is None or module in typed or module == "proto_tf.training.config", name
