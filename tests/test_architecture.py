"""The package reads top-down, every import pointing one way: configs -> data_pipeline -> models ->
losses/metrics -> train/evaluate -> predict/analysis. Checked from the source with `ast` (nothing
is imported), function-level imports included:

* no import cycle between the modules of ifdd_jax and data_pipeline;
* the models import no training, evaluation, inference or command-line code;
* predict and the analysis tools import nothing from ifdd_jax/train.py;
* predict.py stays a command (under 300 lines), and no function is over 80 lines unless a
  `# long: <reason>` comment on its `def` line or the line above says why;
* an import inside a function says why it is deferred (`# deferred: <reason>` on the import or
  above its block of imports): only TensorFlow, torch and optional packages are imported late.
  Precisely, a function-level import names one of LATE_PACKAGES, a package of an optional extra
  of pyproject.toml, a third-party module of TENSORFLOW_BRIDGES, or a module of the packages
  whose own top level imports one of those; the few deferrals outside that rule are listed with
  their reason in LISTED_DEFERRALS.
"""

import ast
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("ifdd_jax", "data_pipeline")
MAX_FUNCTION_LINES = 80
MAX_PREDICT_LINES = 300

# What the models may not reach, directly or through other modules.
NOT_FOR_MODELS = (
    "ifdd_jax.train",
    "ifdd_jax.train_state",
    "ifdd_jax.train_step",
    "ifdd_jax.evaluate",
    "ifdd_jax.input_pipeline",
    "ifdd_jax.optim",
    "ifdd_jax.checkpointing",
    "ifdd_jax.main",
    "ifdd_jax.predict",
    "ifdd_jax.trained_run",
    "ifdd_jax.folds",
    "ifdd_jax.notebook",
    "ifdd_jax.analysis",
    "ifdd_jax.experiments",
    "ifdd_jax.tools",
    "ifdd_jax.convert.__main__",
)


def _modules() -> dict[str, str]:
    """{dotted module name: file path} of every module of the packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _imported(module: str, path: str, node: ast.AST) -> list[str]:
    """The package modules an import statement names (`from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, `level` steps up
            package = module.split(".")
            if not path.endswith("__init__.py"):
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    targets = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.append(name)
    return targets


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_imported(module, path, node))
        graph[module] = edges
    return graph


GRAPH = _graph()


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return components


def _is_under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_the_packages():
    assert {"ifdd_jax.train", "ifdd_jax.models.registry", "data_pipeline.pipeline"} <= set(GRAPH)
    assert "ifdd_jax.train_state" in GRAPH["ifdd_jax.train"]
    # A function-level import is an edge too (input_pipeline defers the TensorFlow pipeline).
    assert "data_pipeline.pipeline" in GRAPH["ifdd_jax.input_pipeline"]


def test_no_import_cycles():
    assert _cycles() == []


def test_models_import_no_training_inference_or_cli_code():
    for module in sorted(GRAPH):
        if _is_under(module, ("ifdd_jax.models",)):
            bad = sorted(m for m in _reachable(module) if _is_under(m, NOT_FOR_MODELS))
            assert not bad, f"{module} reaches {bad}"


def test_inference_and_analysis_do_not_import_the_trainer():
    users = [m for m in GRAPH if _is_under(m, ("ifdd_jax.predict", "ifdd_jax.analysis"))]
    assert "ifdd_jax.predict" in users and "ifdd_jax.analysis.gradcam" in users
    for module in sorted(users):
        bad = sorted(
            m for m in _reachable(module) if _is_under(m, ("ifdd_jax.train", "ifdd_jax.main"))
        )
        assert not bad, f"{module} reaches {bad}"


def test_evaluation_does_not_import_the_trainer():
    assert "ifdd_jax.train" not in _reachable("ifdd_jax.evaluate")


def test_predict_is_a_small_command():
    with open(MODULES["ifdd_jax.predict"], encoding="utf-8") as f:
        assert len(f.readlines()) < MAX_PREDICT_LINES


def _functions() -> list[tuple[str, ast.AST, list[str]]]:
    found = []
    for path in sorted(MODULES.values()):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((os.path.relpath(path, ROOT), node, lines))
    return found


def _says(lines: list[str], lineno: int, marker: str) -> bool:
    """Whether line `lineno` (1-based) or the line above carries `marker`."""
    return any(marker in lines[i - 1] for i in (lineno, lineno - 1) if i >= 1)


def test_functions_are_short_or_say_why():
    long = []
    for path, node, lines in _functions():
        size = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if size > MAX_FUNCTION_LINES and not (
            _says(lines, node.lineno, "# long:") or _says(lines, first, "# long:")
        ):
            long.append(f"{path}:{node.lineno} {node.name} ({size} lines)")
    assert not long, "functions over 80 lines without a '# long: <reason>' comment: " + str(long)


def _deferred(lines: list[str], lineno: int) -> bool:
    """Whether the import at `lineno` (1-based) says why it is deferred: a `# deferred:` comment on
    it or above it, over the block of imports (blank lines between) that it belongs to."""
    i = lineno
    while i >= 1:
        text = lines[i - 1].strip()
        if "# deferred:" in text:
            return True
        if i != lineno and text and not text.startswith(("import ", "from ", "#")):
            return False
        i -= 1
    return False


def test_function_level_imports_say_why():
    silent = []
    for path, node, lines in _functions():
        for inner in ast.walk(node):
            if isinstance(inner, (ast.Import, ast.ImportFrom)) and not _deferred(
                lines, inner.lineno
            ):
                silent.append(f"{path}:{inner.lineno}: {ast.unparse(inner)}")
    assert not sorted(set(silent)), (
        "imports inside functions without '# deferred: <reason>': " + str(sorted(set(silent)))
    )


# --- what may be imported late ------------------------------------------------------------------

# Slow to import (TensorFlow: seconds) or optional (torch): every other module stays usable without
# paying for them.
LATE_PACKAGES = frozenset({"tensorflow", "tensorflow_datasets", "torch", "torchvision"})

# Third-party modules whose import imports TensorFlow, so deferring them defers TensorFlow.
TENSORFLOW_BRIDGES = {"jax.experimental.jax2tf": "jax's TensorFlow converter"}

# Deferrals outside the rule, each kept for its own reason: (file, imported module): why.
LISTED_DEFERRALS = {
    ("ifdd_jax/notebook.py", "IPython.display"): (
        "IPython exists only inside a notebook kernel; show() falls back to printing the path"
    ),
    ("data_pipeline/synthetic.py", "cv2"): (
        "OpenCV (a core dependency, under a second to import) only writes the synthetic videos, "
        "and this module is imported by every training run through data_pipeline.pipeline"
    ),
    ("ifdd_jax/experiments/dilution.py", "ifdd_jax.models.registry"): (
        "check_grid catches a registry that fails to import, so each cell reports the failure "
        "instead of the whole command stopping"
    ),
}


def _optional_packages() -> frozenset[str]:
    """The import names of the packages of pyproject.toml's optional extras (the distribution
    name lower-cased, '-' as '_'; a name that differs from its import name matches nothing, which
    only makes the rule stricter)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    names = set()
    for requirements in extras.values():
        for requirement in requirements:
            name = requirement
            for stop in "<>=!~;[ ":
                name = name.split(stop)[0]
            names.add(name.strip().lower().replace("-", "_"))
    return frozenset(names)


OPTIONAL_PACKAGES = _optional_packages()


def _is_late_package(name: str) -> bool:
    return name.split(".")[0] in LATE_PACKAGES | OPTIONAL_PACKAGES or any(
        name == bridge or name.startswith(bridge + ".") for bridge in TENSORFLOW_BRIDGES
    )


def _top_level_imports(path: str) -> list[str]:
    """The dotted names a module imports when it is imported: its import statements outside
    function bodies (`from a import b` gives a and a.b)."""
    names = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                names.append(child.module)
                names.extend(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(_parse(path))
    return names


def _why_late(module: str, path: str, node: ast.AST) -> str | None:
    """Why the function-level import `node` in `module` may be late, or None when it may not:
    every name it imports is a late package or a package module importing one at its top level."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level:
        names = []  # relative: only package modules, resolved below
    else:
        names = [f"{node.module}.{alias.name}" for alias in node.names]
    outside = [n for n in names if n.split(".")[0] not in PACKAGES]
    if outside:
        return "late package" if all(_is_late_package(n) for n in outside) else None
    reasons = set()
    for target in _imported(module, path, node):
        late = [n for n in _top_level_imports(MODULES[target]) if _is_late_package(n)]
        if not late:
            return None
        reasons.add(f"{target} imports {late[0]}")
    return "; ".join(sorted(reasons)) or None


def _function_imports() -> list[tuple[str, str, ast.AST]]:
    """(file relative to the root, module, import node) of every import inside a function."""
    found = []
    for module, path in sorted(MODULES.items()):
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        found.append((os.path.relpath(path, ROOT), module, inner))
    return found


def _imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]


def test_only_tensorflow_torch_and_optional_packages_are_imported_late():
    listed_seen = set()
    wrong = []
    for path, module, node in _function_imports():
        if _why_late(module, MODULES[module], node):
            continue
        listed = [
            (path, name) for name in _imported_names(node) if (path, name) in LISTED_DEFERRALS
        ]
        if listed:
            listed_seen.update(listed)
            continue
        wrong.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, (
        "function-level imports of modules that are neither TensorFlow, torch, an optional "
        "package nor a module importing one (move them to the top, or list them with a reason "
        "in LISTED_DEFERRALS): " + str(sorted(set(wrong)))
    )
    # A listed deferral that is gone (moved to the top, or now within the rule) leaves the list.
    assert set(LISTED_DEFERRALS) == listed_seen, set(LISTED_DEFERRALS) - listed_seen


def test_the_late_import_rule_tells_the_cases_apart():
    """The rule on written-out imports, so that a rule accepting everything cannot pass."""
    module, path = "ifdd_jax.export.core", MODULES["ifdd_jax.export.core"]

    def why(source: str) -> str | None:
        return _why_late(module, path, ast.parse(source).body[0])

    assert {"onnx", "onnxruntime", "gradio", "torch", "torchvision"} <= OPTIONAL_PACKAGES
    for late in (
        "import tensorflow as tf",
        "from tensorflow_datasets.core import lazy_imports_lib",
        "from torchvision.models.video import mvit",
        "import onnxruntime",
        "from jax.experimental import jax2tf",
        "from data_pipeline.augment import IMAGENET_MEAN",  # imports TensorFlow at its top
        "from ifdd_jax.export.onnx_lowering import to_onnx",  # imports onnx at its top
        "from .onnx_lowering import to_onnx",
    ):
        assert why(late), late
    for needless in (
        "import json",
        "import numpy as np",
        "import cv2",  # a core dependency: late only where LISTED_DEFERRALS says why
        "from jax.experimental import mesh_utils",
        "import tensorflow, json",
        "from data_pipeline.errors import DataError",
        "from ifdd_jax.models.registry import MODELS",
        "from . import portable",
    ):
        assert why(needless) is None, needless
