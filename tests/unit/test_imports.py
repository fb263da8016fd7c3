"""What importing costs, and the shape of the public API (issue #13).

``import engine`` must stay light (every command and every worker pays for
it), a worker must load only the core, the suite must never be loaded by the
runtime, and every exception must be an :class:`engine.errors.EngineError`.
Imports are measured in fresh interpreters: this process has imported
everything already.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine
from engine import errors

ROOT = Path(__file__).resolve().parents[2]

# Subpackages a worker process has no use for.
NOT_IN_A_WORKER = ("engine.net", "engine.health", "engine.cli", "engine.suite",
                   "engine.query", "engine.supervise")

# What a worker imports: workermain at module level and inside its main(),
# resolved from its source so that a new import there is seen here.
_WORKER_IMPORTS = """
import ast, importlib, importlib.util, json, sys
import engine.core.workermain as wm
tree = ast.parse(open(wm.__file__, encoding="utf-8").read())
for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
        name = node.module or ""
        if node.level:
            name = importlib.util.resolve_name("." * node.level + name, "engine.core")
        importlib.import_module(name)
    elif isinstance(node, ast.Import):
        for alias in node.names:
            importlib.import_module(alias.name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> list[str]:
    """The modules loaded in a fresh interpreter after running ``code``,
    which prints ``json.dumps(sorted(sys.modules))`` last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60, check=True).stdout
    return json.loads(out.splitlines()[-1])


def _under(modules: list[str], packages) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_import_engine_loads_no_dependency_and_no_submodule():
    loaded = _modules_after("import engine, json, sys; print(json.dumps(sorted(sys.modules)))")
    assert "engine" in loaded
    assert _under(loaded, ("numpy", "zmq", "asyncio")) == []
    assert [m for m in loaded if m.startswith("engine.")] == []


def test_a_worker_loads_only_the_core():
    loaded = _modules_after(_WORKER_IMPORTS)
    assert "engine.core.workermain" in loaded
    assert _under(loaded, NOT_IN_A_WORKER) == []
    # Nor the network stack: a worker talks through shared memory only.
    assert _under(loaded, ("zmq", "asyncio")) == []


def test_the_runtime_never_loads_the_suite_or_the_cli():
    loaded = _modules_after(
        "import engine, json, sys\n"
        "for name in engine.__all__:\n"
        "    getattr(engine, name)\n"
        "print(json.dumps(sorted(sys.modules)))")
    assert "engine.core.engine" in loaded and "engine.net.client" in loaded
    assert _under(loaded, ("engine.suite", "engine.cli")) == []


def test_all_names_resolve_and_are_exactly_the_public_table():
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    assert sorted(engine.__all__) == sorted([*engine._PUBLIC, "errors", "__version__"])
    assert sorted(dir(engine)) == sorted(engine.__all__)


def _exception_classes(module) -> list[type]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseException)
            and obj.__module__ == module.__name__]


def test_every_exception_of_engine_errors_is_an_engine_error():
    found = _exception_classes(errors)
    assert errors.EngineError in found and len(found) > 1
    assert [c.__name__ for c in found if not issubclass(c, errors.EngineError)] == []


def test_no_module_of_engine_defines_an_exception_outside_engine_error():
    # Every module, the suite and the CLI included: an exception defined
    # anywhere else must still be caught by ``except EngineError``.
    stray = []
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        module = importlib.import_module(info.name)
        stray += [f"{info.name}.{c.__name__}" for c in _exception_classes(module)
                  if not issubclass(c, errors.EngineError)]
    assert stray == []


def test_bench_without_the_extra_names_how_to_install_it():
    # psutil unimportable (None in sys.modules) stands for a missing extra.
    code = ("import sys\nsys.modules['psutil'] = None\n"
            "from engine.cli.main import main\nsys.exit(main(['bench', '--quick']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 1, done.stderr
    assert 'pip install -e ".[bench]"' in done.stderr and "psutil" in done.stderr
