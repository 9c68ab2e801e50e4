"""The layout's rules, checked on the source itself (see docs/ARCHITECTURE.md).

* one checking layer: every user-facing ``raise`` lives in ``losskit/_checks/``;
* one-way layering: public layers -> losses -> checks / engine -> reduction, no cycles among module-level
  imports, and nothing below the public layers imports them;
* sizes: no source file over 500 lines, no test file over 600, ``functional`` and ``nn`` under 200.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import losskit

SRC = pathlib.Path(losskit.__file__).parent
TESTS = pathlib.Path(__file__).parent
PUBLIC = {"functional", "nn", "keras", "distributed", "transformers", "cli", "__init__", "__main__"}
BELOW_PUBLIC = ("engine", "losses", "_checks", "_reduction", "_catalog", "_tracing")


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["losskit", *parts])


def _sources() -> list[pathlib.Path]:
    return sorted(SRC.rglob("*.py"))


# ------------------------------------------------------------------------------------- raises


def _user_facing_raises(tree: ast.AST) -> list[str]:
    """``raise X(...)`` statements, except bare re-raises, re-raising a caught or prepared error (``raise err``),
    private control-flow exceptions (``_BuildFailed``) and ``AttributeError`` from a module ``__getattr__``."""
    found = []
    enclosing: dict[ast.AST, str] = {}
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                enclosing.setdefault(node, func.name) if node is func else enclosing.__setitem__(node, func.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else None
        if exc is None:  # raise err
            continue
        exc_name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", "")
        if exc_name.startswith("_") or (enclosing.get(node) == "__getattr__" and exc_name == "AttributeError"):
            continue
        found.append(f"line {node.lineno}: raise {ast.unparse(node.exc)[:60]}")
    return sorted(found)


def test_every_user_facing_error_is_raised_by_a_checks_helper():
    offenders = {}
    for path in _sources():
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("_checks", "cli"):  # the command line reports its own one-line errors (CliError)
            continue
        raises = _user_facing_raises(ast.parse(path.read_text()))
        if raises:
            offenders[str(rel)] = raises
    assert offenders == {}


def test_the_raise_rule_catches_a_raise_and_spares_reraises():
    sample = (
        "def f(x):\n    if x:\n        raise ValueError('bad x')\n    try:\n        g()\n"
        "    except KeyError as err:\n        raise err\n    except OSError:\n        raise\n"
        "def __getattr__(name):\n    raise AttributeError(name)\n"
    )
    assert _user_facing_raises(ast.parse(sample)) == ["line 3: raise ValueError('bad x')"]


# ----------------------------------------------------------------------------------- layering


def _top_level_imports(path: pathlib.Path) -> set[str]:
    """losskit modules imported at module level (function-level imports are lazy and do not layer)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    known = {_module_name(p) for p in _sources()}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        nodes = [node]
        if isinstance(node, ast.If):  # TYPE_CHECKING blocks and the like
            nodes = node.body
        for n in nodes:
            if isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name.startswith("losskit")}
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    base = package.split(".")
                    base = base[: len(base) - (n.level - 1)]
                    target = ".".join(base + ([n.module] if n.module else []))
                else:
                    target = n.module or ""
                if not target.startswith("losskit"):
                    continue
                submodules = {f"{target}.{a.name}" for a in n.names} & known
                found |= submodules if len(submodules) == len(n.names) else {target, *submodules}
    return {m for m in found if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _top_level_imports(p) for p in _sources()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_nothing_below_the_public_layers_imports_them():
    bad = {
        m: sorted(d for d in deps if _layer(d) in PUBLIC)
        for m, deps in _graph().items()
        if _layer(m) in BELOW_PUBLIC and any(_layer(d) in PUBLIC for d in deps)
    }
    assert bad == {}


def test_engine_checks_and_reduction_never_import_the_losses():
    bad = {
        m: sorted(d for d in deps if _layer(d) == "losses")
        for m, deps in _graph().items()
        if _layer(m) in ("engine", "_checks", "_reduction") and any(_layer(d) == "losses" for d in deps)
    }
    assert bad == {}


def test_checks_import_only_checks():
    allowed = ("_checks", "_tracing")
    bad = {
        m: sorted(d for d in deps if _layer(d) not in allowed)
        for m, deps in _graph().items()
        if _layer(m) == "_checks" and any(_layer(d) not in allowed for d in deps)
    }
    assert bad == {}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(dep) == 1 and not node.startswith(dep + "."):
                cycles.append(stack[stack.index(dep) :] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


# --------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("folder", "limit"), [(SRC, 500), (TESTS, 600)], ids=["source files <= 500 lines", "test files <= 600 lines"]
)
def test_file_sizes(folder, limit):
    sizes = {str(p.relative_to(folder)): len(p.read_text().splitlines()) for p in folder.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > limit} == {}


def test_public_namespaces_are_thin():
    for name in ("functional.py", "nn.py"):
        assert len((SRC / name).read_text().splitlines()) < 200, name
