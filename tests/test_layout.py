"""The package's shape, checked on its source (AST): no private names imported across modules,
and each layer imports only the layers below it (core → hf → lrp → methods → entry points)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hfattr"

# Private imports another engineer is removing (LRP rule helpers made public in lrp/rules.py);
# delete the entry when that lands.
KNOWN_PRIVATE: set[tuple[str, str]] = set()

# Layer (first part of the module path below hfattr) -> hfattr layers it must not import.
ENTRY = {"explainer", "pipeline", "cli", "dataset", "evaluate", "viz", "testing", "__main__"}
FORBIDDEN = {
    "core": {"hf", "lrp", "methods", "result"} | ENTRY,
    "hf": {"lrp", "methods", "result"} | ENTRY,
    "lrp": {"methods", "result"} | ENTRY,
    "methods": {"result"} | ENTRY,
    "result": {"core", "hf", "lrp", "methods"} | ENTRY - {"viz"},
    "viz": {"core", "hf", "lrp", "methods"} | ENTRY - {"viz"},
    "explainer": ENTRY - {"explainer"},
    "pipeline": {"cli", "dataset", "evaluate", "testing", "__main__"},
    "dataset": {"cli", "__main__"},
    "evaluate": {"cli", "__main__"},
}
NO_TRANSFORMERS = {"core"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every import in ``path``, made absolute."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        package = module.rsplit(".", 1)[0] if module.endswith(".__init__") else module
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_checker_sees_the_package():
    names = {m for m, _ in MODULES}
    assert {"hfattr.core.attribution", "hfattr.hf.targets", "hfattr.methods.registry"} <= names
    imports = dict((m, _imports(m, p)) for m, p in MODULES)
    assert ("hfattr.core.hooks", ["preserved_state"]) in [(t, n) for t, n, _ in imports["hfattr.explainer"]]


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_name_imported_from_another_module(module, path):
    bad = []
    for target, names, line in _imports(module, path):
        if not target.startswith("hfattr") or target == module or (module, target) in KNOWN_PRIVATE:
            continue
        private = [n for n in names if _is_private(n)]
        private += [seg for seg in target.split(".") if _is_private(seg) and seg != "_version"]
        if private:
            bad.append(f"line {line}: from {target} import {private}")
    assert not bad, f"{module} imports private names from other modules (make them public in their owner): {bad}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_layers_import_only_what_is_below_them(module, path):
    layer = _layer(module)
    forbidden = FORBIDDEN.get(layer, set())
    bad = []
    for target, names, line in _imports(module, path):
        if layer in NO_TRANSFORMERS and target.split(".")[0] == "transformers":
            bad.append(f"line {line}: {target} (core/ is torch-only)")
        if target == "hfattr":  # `from . import x` at the package root
            hit = [n for n in names if n in forbidden]
        else:
            hit = [_layer(target)] if target.startswith("hfattr.") and _layer(target) in forbidden else []
        bad += [f"line {line}: {target} {h}" for h in hit]
    assert not bad, f"{module} ({layer}/) imports a layer above it: {bad}"


def test_the_checker_catches_a_private_import(tmp_path):
    fake = tmp_path / "hfattr" / "core"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("from .sig import _hidden\nfrom ..hf.targets import TargetRows\nimport transformers\n")
    found = _imports("hfattr.core.x", fake / "x.py")
    assert ("hfattr.core.sig", ["_hidden"], 1) in found
    assert ("hfattr.hf.targets", ["TargetRows"], 2) in found
    assert ("transformers", [], 3) in found
