"""The library computes every loss itself: nothing in src/ calls the torch loss it replaces."""

from __future__ import annotations

import ast
import pathlib

import losskit
from losskit import _catalog

SRC = pathlib.Path(losskit.__file__).parent

# every loss of the catalog (torch.nn.functional's names), and torch's C++ entry points for them
BANNED_FUNCTIONS = set(_catalog.names()) | {
    "nll_loss2d",
    "nll_loss_nd",
    "cross_entropy_loss",
    "ctc_loss",
    "multilabel_margin_loss_forward",
    "multi_margin_loss",
}


def _torch_aliases(tree: ast.AST) -> set[str]:
    """Names a file binds to torch or its submodules (``import torch.nn.functional as F``, ``from torch import nn``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("torch")}
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch") and not node.level:
            names |= {a.asname or a.name for a in node.names}
    return names


def _torch_loss_calls(tree: ast.AST) -> list[str]:
    found = []
    torch_names = _torch_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in BANNED_FUNCTIONS:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in torch_names:
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
        if (
            isinstance(node, ast.Attribute)
            and node.attr.endswith("Loss")
            and not node.attr.startswith("_")  # torch's _Loss / _WeightedLoss base classes are not losses
            and "torch" in ast.unparse(node)
        ):
            found.append(f"{ast.unparse(node)} (line {node.lineno})")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch"):
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in BANNED_FUNCTIONS]
    return found


def test_src_never_calls_the_torch_loss_it_replaces():
    files = sorted(p for p in SRC.rglob("*.py") if "cli" not in p.parts)
    assert len(files) >= 8
    offenders = {str(p.relative_to(SRC)): _torch_loss_calls(ast.parse(p.read_text())) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_catches_a_forbidden_call():
    sample = "import torch.nn.functional as F\ndef f(x, y):\n    return F.cross_entropy(x, y)\n"
    assert _torch_loss_calls(ast.parse(sample)) == ["F.cross_entropy (line 3)"]
    assert _torch_loss_calls(ast.parse("import torch\nl = torch.nn.MSELoss()\n"))


def test_version_is_exposed():
    assert isinstance(losskit.__version__, str) and losskit.__version__.count(".") == 2
