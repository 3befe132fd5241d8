"""The package's imports point one way: no cycle, and no module imports a layer above its own.

Every import is counted, the ones inside functions too (they run as surely as
the top-level ones, only later). ``import fairseq_ser`` itself is the
registration entry point (``fairseq_ser.register()``) and is allowed anywhere.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fairseq_ser"

# lower number = lower layer; a module may import its own layer or any lower one
LAYERS = {
    "errors": 0, "fileio": 0, "frames": 0, "metrics": 0, "plots": 0,
    "data": 1,
    "tasks": 2, "models": 2, "optim": 2,
    "criterions": 3,
    "clustering": 4, "inference": 4, "windowing": 4, "onnx_predictor": 4,
    "evaluation": 5, "prediction": 5, "onnx_export": 5,
    "experiments": 6,
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path):
    """``(line, imported module)`` for every fairseq_ser import in ``path``, relative ones resolved."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "fairseq_ser"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "fairseq_ser":
                target = node.module
            else:
                continue
            # `from . import x` / `from ..data import manifest`: x may be a module of its own
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if _exists(candidate) else target))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def layer(module: str):
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def graph():
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        edges[module_name(path)] = [(line, target) for line, target in imports_of(path) if target != "fairseq_ser"]
    return edges


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in graph() if m != "fairseq_ser" and layer(m) is None)
    assert not unplaced, f"modules outside every layer of LAYERS: {unplaced}"


def test_no_upward_import():
    upward = []
    for module, targets in graph().items():
        if module == "fairseq_ser":
            continue
        for line, target in targets:
            if layer(target) is not None and layer(target) > layer(module):
                upward.append(f"{module}:{line} imports {target} (layer {layer(target)} > {layer(module)})")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_import_cycle():
    imports = graph()
    edges = {m: sorted({t for _, t in targets if t in imports}) for m, targets in imports.items()}
    # Tarjan's strongly connected components
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
            # a package's __init__ importing its own modules is not a cycle with them
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_upward_and_cyclic_imports(tmp_path, monkeypatch):
    """The rules above can fail: a data module importing the CLI is caught."""
    fake = tmp_path / "fairseq_ser"
    (fake / "data").mkdir(parents=True)
    (fake / "cli").mkdir()
    for init in (fake / "__init__.py", fake / "data" / "__init__.py", fake / "cli" / "__init__.py"):
        init.write_text("")
    (fake / "data" / "reader.py").write_text("def f():\n    from ..cli import tool\n")
    (fake / "cli" / "tool.py").write_text("from ..data import reader\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"fairseq_ser.data.reader:2 imports fairseq_ser.cli.tool"):
        test_no_upward_import()
    with pytest.raises(AssertionError, match=r"import cycles: \[\['fairseq_ser.cli.tool', 'fairseq_ser.data.reader'\]\]"):
        test_no_import_cycle()
