"""The public API is typed: every public function and method of the modules a user
imports (docs/layout.md) annotates its parameters and its return value."""

import ast
import os
import re

import pytest

import proto_tf

PUBLIC_MODULES = (
    "attention",
    "baseline",
    "blockwise",
    "classifier",
    "metrics",
    "model",
    "index",
    "database_blocks",
    "normalizations/base",
    "normalizations/entmax15",
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
    "serving/signatures",
    "serving/publishing",
    "serving/request_checks",
    "serving/options",
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


def _imported_modules(path):
    """The `proto_tf...` modules a source file imports (absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("proto_tf")}


def test_imports_flow_one_way():
    # data -> model -> training -> serving / analysis -> cli: no module of the lower
    # layers imports analysis/ or cli/ (the package's lazy top-level names aside).
    root = os.path.dirname(proto_tf.__file__)
    lower = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".py")
        and os.path.relpath(folder, root).split(os.sep)[0] not in ("analysis", "cli")
        and os.path.join(folder, name) != os.path.join(root, "__init__.py")
    ]
    assert len(lower) > 40
    upward = {
        os.path.relpath(path, root): sorted(
            name for name in _imported_modules(path) if name.startswith(("proto_tf.analysis", "proto_tf.cli"))
        )
        for path in lower
    }
    assert {path: names for path, names in upward.items() if names} == {}


def test_no_module_switches_on_a_normalisations_name():
    # Each normalisation's behaviour lives in its module (proto_tf/normalizations); other
    # modules look it up by name, so a new one needs no edits elsewhere. A comparison of
    # a string with one of the names outside that package would be a switch.
    root = os.path.dirname(proto_tf.__file__)
    names = "|".join(proto_tf.normalizations.names())
    switch = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = {}
    for folder, _, files in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] == "normalizations":
            continue
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    hits = [line.strip() for line in handle if switch.search(line)]
                if hits:
                    found[os.path.relpath(os.path.join(folder, name), root)] = hits
    assert found == {}
