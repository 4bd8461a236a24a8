"""The layers of ``src/scorelab`` depend one way only, and no import cycle hides anywhere.

Every module is parsed with ``ast`` (nothing is imported), and every ``import`` of scorelab
counts: at module level and inside functions, where an import that dodges a cycle would
otherwise go unseen. Three rules:

- no cycle in the import graph;
- nothing below ``lit`` (the core, nets, data, metrics, io, runs, plots, ...) imports
  ``scorelab.lit`` or an entry point;
- an entry point imports no other entry point (what two of them share lives in a lower module).

Lightning code (``lit``) sits between: it may import everything below it, no entry point.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "scorelab"
LIT = "scorelab.lit"
# The command-line programs on top (``python -m ...``). They may import lit and everything below.
ENTRY_POINTS = frozenset(
    {
        "scorelab.train",
        "scorelab.sample",
        "scorelab.evaluate",
        "scorelab.report",
        "scorelab.convert",
        "scorelab.data.prepare",
    }
)
# Modules with a ``__main__`` block that belong below lit (metric tools): they obey its rules.
TOOLS_BELOW_LIT = frozenset({"scorelab.metrics.fid_weights", "scorelab.metrics.mnist_classifier"})


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` that reaches ``target`` (a scorelab module)."""

    source: str
    target: str
    line: int
    function: str | None  # the enclosing function, or None at module level

    def where(self) -> str:
        inside = f" inside {self.function}()" if self.function else ""
        return f"{self.source}:{self.line}{inside}"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package under ``src``, by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that importing ``name`` loads last: ``name`` itself, or the longest module
    prefix of it (``scorelab.sampling.pc_sampler`` -> ``scorelab.sampling``)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, source: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.source, self.modules = source, modules
        self.package = source if is_package else source.rpartition(".")[0]
        self.functions: list[str] = []
        self.found: list[Import] = []

    def _add(self, name: str, line: int) -> None:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return
        target = _resolve(name, self.modules)
        if target is not None and target != self.source:
            imp = Import(self.source, target, line, ".".join(self.functions) or None)
            if imp not in self.found:  # from m import a, b: one import of m
                self.found.append(imp)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: from . import x, from ..io import y
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        for alias in node.names:
            # ``from scorelab.nets import fir`` loads the submodule; ``from scorelab.io import
            # read_checkpoint`` the module that defines the name.
            sub = f"{module}.{alias.name}"
            self._add(sub if sub in self.modules else module, node.lineno)


def import_graph(src: Path = SRC) -> dict[str, list[Import]]:
    """Each module's imports of other scorelab modules, from its source."""
    modules = module_files(src)
    graph = {}
    for name, path in modules.items():
        visitor = _ImportVisitor(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = visitor.found
    return graph


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """The cycles of the graph, each as the chain of imports that closes it: in every strongly
    connected component of more than one module (Tarjan's algorithm), the shortest cycle
    through each of its modules, each distinct cycle once."""
    succ = {m: sorted({i.target for i in imps}) for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ.get(v, []):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles, seen = [], set()
    for comp in sorted(c for c in components if len(c) > 1):
        for start in comp:
            chain = _cycle_through(start, set(comp), graph)
            edges = frozenset((i.source, i.target) for i in chain)
            if edges not in seen:
                seen.add(edges)
                cycles.append(chain)
    return cycles


def _cycle_through(start: str, members: set[str], graph: dict[str, list[Import]]) -> list[Import]:
    """The shortest chain of imports among ``members`` from ``start`` back to it."""
    parent: dict[str, Import] = {}
    frontier, seen = [start], {start}
    while frontier:
        nxt = []
        for v in frontier:
            for imp in sorted(graph[v], key=lambda i: (i.target, i.line)):
                if imp.target == start:
                    chain = [imp]
                    while chain[0].source != start:
                        chain.insert(0, parent[chain[0].source])
                    return chain
                if imp.target in members and imp.target not in seen:
                    seen.add(imp.target)
                    parent[imp.target] = imp
                    nxt.append(imp.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(members)}")  # pragma: no cover


def describe_cycle(chain: list[Import]) -> str:
    path = " -> ".join([chain[0].source, *(i.target for i in chain)])
    return f"import cycle {path} ({'; '.join(i.where() for i in chain)})"


def layer(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry point"
    if module == LIT or module.startswith(LIT + "."):
        return "lit"
    return "below lit"


def layer_violations(graph: dict[str, list[Import]]) -> list[tuple[str, str]]:
    """``(rule, message)`` for each import that goes up. Rules: ``"below lit"`` (a module below
    lit imports lit or an entry point), ``"lit"`` (lit imports an entry point) and ``"entry
    point"`` (an entry point imports another)."""
    found = []
    for imps in graph.values():
        for imp in imps:
            src, dst = layer(imp.source), layer(imp.target)
            if src == "below lit" and dst in ("lit", "entry point"):
                msg = (
                    f"{imp.where()}: {imp.source} (below lit) imports {imp.target} ({dst}); "
                    "move what it needs down (into scorelab.io, outputs, runs, ...)"
                )
            elif src == "lit" and dst == "entry point":
                msg = f"{imp.where()}: {imp.source} (lit) imports entry point {imp.target}"
            elif src == "entry point" and dst == "entry point":
                msg = (
                    f"{imp.where()}: entry point {imp.source} imports entry point {imp.target}; "
                    "move what they share into a lower module"
                )
            else:
                continue
            found.append((src, msg))
    return found


def _runs_as_main(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


# ----------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph()


def test_no_import_cycle(graph) -> None:
    cycles = [describe_cycle(c) for c in find_cycles(graph)]
    assert not cycles, "\n".join(cycles)


def test_modules_below_lit_import_neither_lit_nor_an_entry_point(graph) -> None:
    bad = [msg for rule, msg in layer_violations(graph) if rule in ("below lit", "lit")]
    assert not bad, "\n".join(bad)


def test_no_entry_point_imports_another(graph) -> None:
    bad = [msg for rule, msg in layer_violations(graph) if rule == "entry point"]
    assert not bad, "\n".join(bad)


def test_the_layers_are_the_ones_named(graph) -> None:
    """The rules bite only if the names are right: every entry point exists, the modules the
    architecture puts below lit are classified so, and every module that runs as a program is
    either an entry point or a tool declared to live below lit."""
    assert ENTRY_POINTS <= set(graph), sorted(ENTRY_POINTS - set(graph))
    below = {
        "scorelab.sde",
        "scorelab.losses",
        "scorelab.sampling",
        "scorelab.sampling.pc",
        "scorelab.nets.precond",
        "scorelab.metrics.mnist_classifier",
        "scorelab.data.images",
        "scorelab.io",
        "scorelab.runs",
        "scorelab.plots",
        "scorelab.outputs",
        "scorelab.toy",
        "scorelab.schedules",
        "scorelab.likelihood",
        "scorelab.energy",
        "scorelab.conversion.score_sde",
    }
    assert {m: layer(m) for m in below if layer(m) != "below lit"} == {}
    assert below <= set(graph), sorted(below - set(graph))
    assert layer("scorelab.lit.build") == "lit"
    programs = {m for m, p in module_files().items() if _runs_as_main(p)}
    assert programs == ENTRY_POINTS | TOOLS_BELOW_LIT, (
        "a module with a __main__ block must be listed in ENTRY_POINTS (a program on top) or "
        f"TOOLS_BELOW_LIT: {sorted(programs ^ (ENTRY_POINTS | TOOLS_BELOW_LIT))}"
    )


def test_io_imports_nothing_of_scorelab(graph) -> None:
    """``scorelab.io`` is the floor every layer may stand on."""
    assert [i.where() + " -> " + i.target for i in graph["scorelab.io"]] == []


# ----------------------------------------------------------------------------- the checker
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake scorelab under ``tmp_path/src`` with the given module sources."""
    for rel, text in files.items():
        path = tmp_path / "src" / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / "src" / PACKAGE).rglob("*.py")}:
        (folder / "__init__.py").touch()
    return tmp_path / "src"


CLEAN = {
    "io.py": "import torch\n",
    "sde.py": "from scorelab.io import read_checkpoint\n",
    "lit/build.py": "from scorelab.lit.module import ScoreModule\nfrom scorelab import sde\n",
    "lit/module.py": "from .. import io\n",
    "outputs.py": "from scorelab.io import atomic_output\n",
    "train.py": "from scorelab.lit.build import build\nfrom scorelab.outputs import write\n",
    "sample.py": "from scorelab.lit import build\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    g = import_graph(_package(tmp_path, CLEAN))
    assert find_cycles(g) == [] and layer_violations(g) == []
    # relative and ``from package import module`` imports resolve to the module
    assert {i.target for i in g["scorelab.lit.module"]} == {"scorelab.io"}
    assert {i.target for i in g["scorelab.sample"]} == {"scorelab.lit.build"}


def test_the_checker_finds_a_cycle_hidden_inside_a_function(tmp_path: Path) -> None:
    files = dict(CLEAN)
    files["lit/module.py"] = "def load():\n    from scorelab.lit.build import CheckpointError\n"
    cycles = find_cycles(import_graph(_package(tmp_path, files)))
    assert [describe_cycle(c) for c in cycles] == [
        "import cycle scorelab.lit.build -> scorelab.lit.module -> scorelab.lit.build "
        "(scorelab.lit.build:1; scorelab.lit.module:2 inside load())"
    ]


def test_the_checker_finds_a_three_module_cycle(tmp_path: Path) -> None:
    files = {
        "a.py": "import scorelab.b\n",
        "b.py": "from scorelab.c import x\n",
        "c.py": "def f():\n    import scorelab.a\n",
    }
    (chain,) = find_cycles(import_graph(_package(tmp_path, files)))
    assert [i.source for i in chain] == ["scorelab.a", "scorelab.b", "scorelab.c"]
    assert chain[-1].target == "scorelab.a" and chain[-1].function == "f"


def test_the_checker_names_every_cycle_of_a_tangle(tmp_path: Path) -> None:
    """lit/build <-> lit/module and lit/build <-> lit/checkpoint_io, as the package once had."""
    files = dict(CLEAN)
    files["lit/module.py"] = "def load():\n    from scorelab.lit.build import CheckpointError\n"
    files["lit/build.py"] += "from scorelab.lit.checkpoint_io import check\n"
    files["lit/checkpoint_io.py"] = "def f():\n    from scorelab.lit.build import read\n"
    cycles = find_cycles(import_graph(_package(tmp_path, files)))
    assert sorted(" -> ".join([c[0].source, *(i.target for i in c)]) for c in cycles) == [
        "scorelab.lit.build -> scorelab.lit.checkpoint_io -> scorelab.lit.build",
        "scorelab.lit.module -> scorelab.lit.build -> scorelab.lit.module",
    ]


def test_the_checker_refuses_an_upward_import_below_lit(tmp_path: Path) -> None:
    files = dict(CLEAN)
    files["metrics/mnist_classifier.py"] = "from scorelab.lit.callbacks import x\n"
    files["lit/callbacks.py"] = ""
    files["plots.py"] = "def f():\n    from scorelab.sample import draw\n"
    bad = sorted(layer_violations(import_graph(_package(tmp_path, files))))
    assert [rule for rule, _ in bad] == ["below lit", "below lit"], bad
    assert bad[0][1].startswith(
        "scorelab.metrics.mnist_classifier:1: scorelab.metrics.mnist_classifier (below lit) "
        "imports scorelab.lit.callbacks (lit)"
    )
    assert bad[1][1].startswith(
        "scorelab.plots:2 inside f(): scorelab.plots (below lit) imports scorelab.sample "
        "(entry point)"
    )


def test_the_checker_refuses_an_entry_point_importing_another(tmp_path: Path) -> None:
    files = dict(CLEAN)
    files["evaluate.py"] = "def evaluate():\n    from scorelab.sample import draw\n"
    bad = layer_violations(import_graph(_package(tmp_path, files)))
    assert bad == [
        (
            "entry point",
            "scorelab.evaluate:2 inside evaluate(): entry point scorelab.evaluate imports entry "
            "point scorelab.sample; move what they share into a lower module",
        )
    ]
