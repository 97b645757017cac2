"""The import graph of the project's own modules: floors, no circles, nothing upward.

Every ``import`` and ``from ... import`` of every module is read with ``ast`` (those inside
functions too) and resolved to a project module. Each module belongs to the floor of the
longest prefix in :data:`FLOORS`; a module may import from its own floor or lower ones,
never higher, and the graph of modules has no circle. An import of a project module inside a
function is refused outright: it is how import circles get hidden.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOORS = {
    # the contract every layer shares: pure Python (numpy at most)
    "spikestream": 0,
    # PyTorch: training, the compiler, the golden model and its cycle model
    "models": 1,
    # Amaranth gateware
    "hw": 2,
    # the boards' platforms and top levels (built from the gateware)
    "boards": 3,
    # cocotb testbenches and the simulation runner
    "sim": 4,
    # the host: transports (serial, simulated SoC, golden board), the client, sw.generate
    "sw": 5,
    # the bitstream build (a tool over boards, gateware and host defaults)
    "hw.build": 6,
    # benchmarks
    "bench": 7,
}
FLOOR_NAMES = ["spikestream", "models", "hw", "boards", "sim", "sw", "hw.build", "bench"]
PACKAGES = ("spikestream", "models", "hw", "boards", "sim", "sw", "bench")


def _modules():
    """``{dotted name: path}`` of every project module."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def floor_of(module):
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best]


def _resolve(name, modules):
    """The project module that ``name`` (a dotted import target) is, or lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(modules):
    """``[(importer, imported, line, inside a function)]`` for every project import."""
    found = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        funcs = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        inner = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module
                targets = [f"{stem}.{a.name}" for a in node.names] if stem else []
            else:
                continue
            for t in targets:
                target = _resolve(t, modules)
                if target and target != mod:
                    found.append((mod, target, node.lineno, id(node) in inner))
    return found


def _cycle(edges):
    """One circle in the graph ``{module: set of modules}``, or ``None``."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(edges):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_floors_no_circles_no_upward_imports():
    modules = _modules()
    found = imports(modules)
    upward = [f"{a} (floor {FLOOR_NAMES[floor_of(a)]}) imports {b} (floor "
              f"{FLOOR_NAMES[floor_of(b)]}), line {line}"
              for a, b, line, _ in found if floor_of(b) > floor_of(a)]
    hidden = [f"{a} imports {b} inside a function, line {line}"
              for a, b, line, inner in found if inner]
    edges = {}
    for a, b, _, _ in found:
        edges.setdefault(a, set()).add(b)
    circle = _cycle(edges)
    print("floors, bottom first:")
    for i, name in enumerate(FLOOR_NAMES):
        members = sorted(m for m in modules if floor_of(m) == i)
        print(f"  {i} {name} ({len(members)}): " + ", ".join(members))
    assert not upward, "upward imports:\n" + "\n".join(upward)
    assert not hidden, "imports hidden inside functions:\n" + "\n".join(hidden)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checker_sees_what_it_must_refuse(tmp_path):
    # The checker's own parts can fail: an upward import, a hidden one and a circle.
    modules = {"spikestream.a": tmp_path / "a.py", "models.b": tmp_path / "b.py",
               "models.c": tmp_path / "c.py"}
    modules["spikestream.a"].write_text("from models.b import x\n")
    modules["models.b"].write_text("def f():\n    from . import c\n")
    modules["models.c"].write_text("import models.b\n")
    found = imports(modules)
    assert ("spikestream.a", "models.b", 1, False) in found
    assert ("models.b", "models.c", 2, True) in found
    assert floor_of("spikestream.a") < floor_of("models.b")
    assert floor_of("hw.build") > floor_of("sw") > floor_of("hw")
    edges = {}
    for a, b, _, _ in found:
        edges.setdefault(a, set()).add(b)
    assert _cycle(edges) in (["models.b", "models.c", "models.b"],
                             ["models.c", "models.b", "models.c"])
