"""The shape of the package: layers whose arrows only point down, no
circles, short modules, and a README whose layout says what is there.

Each module belongs to one layer.  A module imports only from its own
layer or the ones below (entry points may import anything), and within a
layer the imports form no circle.  Imports inside functions count.
"""
from __future__ import annotations

import ast
import pkgutil
import re

import kexec_auto
from conftest import REPO

PACKAGE = REPO / "src" / "kexec_auto"

#: bottom up; the README's "Layout" names the same layers
LAYERS = {
    "core": {"assess", "bootimage", "clock", "cmdline", "config", "debconf", "initrd", "metrics", "policy",
             "release", "render", "shfile", "statefile", "trial"},
    "system": {"bootscan", "bootstate", "commands", "files", "host", "kexec", "kexectools", "lastboot", "lock",
               "log", "managed", "paths", "safetynet", "settings"},
    "application": {"app", "reboot", "report"},
    "entry": {"__init__", "__main__", "cli", "hook"},
}
ORDER = list(LAYERS)
MAX_LINES = 300


def modules() -> list[str]:
    return sorted(["__init__"] + [m.name for m in pkgutil.iter_modules(kexec_auto.__path__)])


def layer_of(name: str) -> str:
    return next(layer for layer, names in LAYERS.items() if name in names)


def imports(name: str) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kexec_auto"):
            found.add(node.module.split(".")[1] if "." in node.module else "__init__")
    found.discard("__version__")
    return found - {name}


def test_every_module_has_a_layer():
    assert set(modules()) == set().union(*LAYERS.values())


def test_imports_point_down_or_sideways_only():
    upward = []
    for name in modules():
        if layer_of(name) == "entry":
            continue
        for other in imports(name):
            if ORDER.index(layer_of(other)) > ORDER.index(layer_of(name)):
                upward.append(f"{name} ({layer_of(name)}) imports {other} ({layer_of(other)})")
    assert upward == []


def test_no_circles():
    graph = {name: imports(name) for name in modules()}
    circles = []

    def visit(name: str, path: list[str]) -> None:
        for other in sorted(graph[name]):
            if other in path:
                circles.append(" -> ".join(path[path.index(other):] + [other]))
            elif len(path) < len(graph):
                visit(other, path + [other])

    for name in graph:
        visit(name, [name])
    assert circles == []


def test_modules_stay_short():
    long = {name: n for name in modules()
            if (n := len((PACKAGE / f"{name}.py").read_text().splitlines())) > MAX_LINES}
    assert long == {}


def readme_layout() -> dict[str, str]:
    """Module -> description, from the README's "Layout" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^  \* `(\w+)`: (.+)$", section, re.M))


def summary(name: str) -> str:
    """A module's docstring, first sentence."""
    doc = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")


def test_readme_layout_names_every_module_as_its_docstring_does():
    described = readme_layout()
    assert sorted(described) == [m for m in modules() if m not in ("__init__", "__main__")]
    wrong = {name: (text, summary(name)) for name, text in described.items()
             if text.rstrip(".") != summary(name)}
    assert wrong == {}
