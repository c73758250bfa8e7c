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
"""

import ast
import os

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
