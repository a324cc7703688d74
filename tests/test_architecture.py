"""The layering of docs/architecture.md, checked on the code: the static import graph of recbole_mm (every
``import`` statement, in functions too, read with ``ast``) has no circle and no arrow from a lower floor to a higher
one; importing the package changes nothing; the ground floor imports without RecBole."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "recbole_mm")

# floor of each module (the longest matching prefix wins), lowest first, as docs/architecture.md states them
FLOORS = [
    ("ground", ["recbole_mm", "recbole_mm.errors", "recbole_mm.compat", "recbole_mm.runtime", "recbole_mm.memory",
                "recbole_mm.clustering", "recbole_mm.encoders"]),
    ("registry", ["recbole_mm.registry"]),
    ("config", ["recbole_mm.config"]),
    ("data", ["recbole_mm.data"]),
    ("prepare", ["recbole_mm.prepare"]),
    ("model", ["recbole_mm.model"]),
    ("trainer", ["recbole_mm.trainer"]),
    ("quick_start", ["recbole_mm.quick_start"]),
    ("cli", ["recbole_mm.prepare.cli", "recbole_mm.prepare.__main__", "recbole_mm.tuning", "recbole_mm.results",
             "run_recbole_mm", "run_hyper"]),
]


def floor_of(module: str) -> int:
    best, level = "", None
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "recbole_mm"  # the package's __init__ itself only
            if (module == prefix or inside) and len(prefix) > len(best):
                best, level = prefix, index
    assert level is not None, f"{module} has no floor in FLOORS (add it to docs/architecture.md and here)"
    return level


def module_files():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield module[: -len(".__init__")] if module.endswith(".__init__") else module, path
    for script in ("run_recbole_mm", "run_hyper"):
        yield script, os.path.join(ROOT, f"{script}.py")


def imports_of(module: str, path: str) -> set:
    """recbole_mm modules ``module`` imports (``from recbole_mm.x import y`` counts ``recbole_mm.x.y`` where that is
    a module, else ``recbole_mm.x``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return {name for name in found if name == "recbole_mm" or name.startswith("recbole_mm.")}


def _is_module(name: str) -> bool:
    path = os.path.join(ROOT, *name.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def graph() -> dict:
    return {module: imports_of(module, path) - {module, "recbole_mm"} for module, path in module_files()}


def test_no_arrow_points_up():
    upward = [
        f"{source} ({FLOORS[floor_of(source)][0]}) imports {target} ({FLOORS[floor_of(target)][0]})"
        for source, targets in graph().items()
        for target in targets
        if floor_of(target) > floor_of(source)
    ]
    assert not upward, "\n".join(upward)


def test_no_circle():
    edges = graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_an_upward_arrow_and_a_circle(tmp_path):
    """The two checks above on a planted graph (they would pass vacuously on an empty one)."""
    assert floor_of("recbole_mm.clustering.assign") < floor_of("recbole_mm.registry") < floor_of("recbole_mm.config")
    edges = graph()
    assert "recbole_mm.runtime" in edges["recbole_mm.clustering.assign"]  # ground to ground: allowed
    assert "recbole_mm.registry" in edges["recbole_mm.config"] and "recbole_mm.config" in edges["recbole_mm.data.utils"]
    planted = tmp_path / "m.py"
    planted.write_text("from recbole_mm.trainer import PretrainTrainer\n\ndef f():\n    import recbole_mm.config\n")
    assert imports_of("recbole_mm.clustering.m", str(planted)) == {"recbole_mm.trainer", "recbole_mm.config"}


def run_python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["PYTHONPATH"] = ROOT
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_changes_nothing():
    code = (
        "import os, sys, numpy\n"
        "before = set(sys.modules)\n"
        "import recbole_mm\n"
        "print(os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'), sorted(set(sys.modules) - before))"
    )
    assert run_python(code) == "None ['recbole_mm']"


def test_the_ground_floor_imports_without_recbole():
    code = (
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'recbole' or name.startswith('recbole.'):\n"
        "            raise ModuleNotFoundError(f'blocked for the test: {name}')\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "import recbole_mm.clustering, recbole_mm.encoders, recbole_mm.errors, recbole_mm.runtime\n"
        "from recbole_mm.clustering import kmeans\n"
        "import torch\n"
        "result = kmeans(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), 3, seed=0)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'recbole'), tuple(result.centroids.shape))\n"
    )
    assert run_python(code) == "[] (3, 4)"
