"""The layers of the house, checked on the source.

    contracts, processes  <-  router, triton, batch, pipeline, prompts  <-  stack, reliability,
    bench  <-  cli

Arrows only point down (or sideways within a layer), the bottom packages import nothing of
ours but themselves, every module belongs to a layer, no package or module takes part in an
import cycle, nothing imports a private module or name of another package, and the generated
gRPC code is reached only through `router.contract`. Every import counts: at the top, inside
functions, under TYPE_CHECKING, absolute or relative.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("router", "services", "bench")
LAYERS = {
    "services.contracts": 0,
    "services.processes": 0,
    "router": 1,
    "services.triton": 1,
    "services.batch": 1,
    "services.pipeline": 1,
    "services.prompts": 1,
    "services.stack": 2,
    "services.reliability": 2,
    "bench": 2,
    "services.cli": 3,
}
# Folders that hold packages but are no layer of their own: `services` only groups them,
# `services.monitoring` holds data files.
UNLAYERED = {"services", "services.monitoring"}
GENERATED = "router._generated"
GENERATED_GATE = "router.contract"
OURS = {"router", "services", "bench", "tests"}


class Sources(dict[str, str]):
    """Module name -> source text; `packages` are the modules that are an __init__.py."""

    def __init__(self) -> None:
        super().__init__()
        self.packages: set[str] = set()


def read_sources(root: Path, folders: tuple[str, ...] = SOURCES) -> Sources:
    """Every module of `folders` under `root` by dotted name, with its source."""
    sources = Sources()
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if parts[-1] == "__init__":
                sources.packages.add(name)
            sources[name] = path.read_text(encoding="utf-8")
    return sources


def package_of(module: str) -> str | None:
    """The layered package a module belongs to (the longest matching prefix)."""
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def imports(module: str, sources: Sources) -> Iterator[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import of ours in `module`."""
    for node in ast.walk(ast.parse(sources[module])):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Relative to the module's package: itself for an __init__.py.
                package = (
                    module.split(".") if module in sources.packages else module.split(".")[:-1]
                )
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] not in OURS:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule, None) if submodule in sources else (base, alias.name)


def is_private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(sources: Sources) -> list[str]:
    problems = [
        f"{module} belongs to no layer; add its package to LAYERS"
        for module in sources
        if package_of(module) is None and module not in UNLAYERED
    ]
    modules: dict[str, set[str]] = {name: set() for name in sources}
    packages: dict[str, set[str]] = {}
    for module in sources:
        mine = package_of(module)
        for target, name in imports(module, sources):
            theirs = package_of(target)
            if target in sources and target != module:
                modules[module].add(target)
            if target.startswith(GENERATED) and not (
                module == GENERATED_GATE or module.startswith(GENERATED)
            ):
                problems.append(f"{module} imports the generated {target}; use router.contract")
            if mine is None or mine == theirs:
                continue
            if theirs is None:
                problems.append(f"{module} imports {target}, which belongs to no layer")
                continue
            packages.setdefault(mine, set()).add(theirs)
            if LAYERS[mine] == 0:
                problems.append(f"{module} imports {target}: {mine} imports nothing of ours")
            elif LAYERS[theirs] > LAYERS[mine]:
                problems.append(f"{module} (layer {LAYERS[mine]}) imports {target} (layer "
                                f"{LAYERS[theirs]}): arrows point down only")  # fmt: skip
            if is_private(target) or (name is not None and is_private(name)):
                shown = target if name is None else f"{target}.{name}"
                problems.append(f"{module} imports the private {shown} of {theirs}")
    problems += [f"package cycle: {' <-> '.join(c)}" for c in cycles(packages)]
    problems += [f"module cycle: {' <-> '.join(c)}" for c in cycles(modules)]
    return problems


def test_the_tree_keeps_its_layers() -> None:
    sources = read_sources(ROOT)
    assert {package_of(module) for module in sources} >= set(LAYERS)
    assert violations(sources) == []


def test_tests_use_only_public_names() -> None:
    """Tests are on top of everything, but they too speak the public interfaces."""
    sources = read_sources(ROOT, ("tests", *SOURCES))
    private = [
        f"{module} imports {target if name is None else f'{target}.{name}'}"
        for module in sources
        if module.startswith("tests.")
        for target, name in imports(module, sources)
        if is_private(target) or (name is not None and is_private(name))
    ]
    assert private == []


@pytest.mark.parametrize(
    ("module", "planted", "expected"),
    [
        ("services.contracts.text", "from router.routing import Router",
         "services.contracts.text imports router.routing: services.contracts imports nothing"),
        ("services.contracts.text", "from router.routing import Router", "module cycle:"),
        ("router.model", "from services.stack.demo import run_demo", "package cycle:"),
        ("services.prompts.llm", "from services.batch.labels import Labelled",
         "package cycle: services.batch <-> services.prompts"),
        ("bench.stack_bench", "from router.model import _CHANNEL_ARGS",
         "bench.stack_bench imports the private router.model._CHANNEL_ARGS of router"),
        ("services.stack.demo", "from router._generated.switchyard.v1 import router_pb2",
         "services.stack.demo imports the generated router._generated.switchyard.v1"),
        ("services.contracts", "from ..stack import stack",
         "services.contracts imports services.stack.stack: services.contracts imports nothing"),
        ("services.stack.demo", "from .. import cli",
         "services.stack.demo (layer 2) imports services.cli (layer 3)"),
        ("services.contracts.text", "from services.processes.ports import free_port",
         "services.contracts.text imports services.processes.ports: services.contracts imports "
         "nothing of ours"),
        ("services.cli.models", "import services.processes.supervisor as s\nfrom services.cli "
         "import _output\nfrom . import batch", "no violation expected"),
    ],
)  # fmt: skip
def test_a_planted_violation_is_found(module: str, planted: str, expected: str) -> None:
    sources = read_sources(ROOT)
    sources[module] += "\n" + planted + "\n"
    if expected == "no violation expected":
        assert violations(sources) == []
        return
    found = violations(sources)
    assert any(problem.startswith(expected) or expected in problem for problem in found), found


def test_a_module_outside_every_layer_is_found() -> None:
    sources = read_sources(ROOT)
    sources["services.helpers"] = "from services.stack import stack\n"
    sources["services.contracts.text"] += "\nfrom services import helpers\n"
    found = violations(sources)
    assert "services.helpers belongs to no layer; add its package to LAYERS" in found
    assert any("imports services.helpers, which belongs to no layer" in p for p in found), found
