"""The package's shape: one-way imports and explicit public names."""

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pymoult"
PUBLIC_MODULES = ["pymoult.errors", "pymoult.threads", "pymoult.lowlevel.alterability",
                  "pymoult.lowlevel.stack", "pymoult.lowlevel.world", "pymoult.lowlevel.journal",
                  "pymoult.lowlevel.relinking", "pymoult.lowlevel.data_update",
                  "pymoult.lowlevel.class_update", "pymoult.lowlevel.object_conversion",
                  "pymoult.lowlevel.local_variables",
                  "pymoult.lowlevel.redirection", "pymoult.lowlevel.data_access",
                  "pymoult.lowlevel.instances", "pymoult.lowlevel.lazy_conversion",
                  "pymoult.highlevel.updates", "pymoult.highlevel.managers",
                  "pymoult.highlevel.listener", "pymoult.highlevel.runner", "pymoult.protocol",
                  "pymoult.client", "pymoult.logs", "pymoult.delivery",
                  "pymoult.delivery.socket_server", "pymoult.delivery.pipe_server",
                  "pymoult.delivery.authentication", "pymoult.delivery.peers",
                  "pymoult.delivery.scripts", "pymoult.delivery.script_host",
                  "pymoult.delivery.reverts", "pymoult.delivery.two_phase",
                  "pymoult.highlevel.revert", "pymoult.rollout", "pymoult.running_apps",
                  "pymoult.highlevel.lifecycle", "pymoult.highlevel.module_update",
                  "pymoult.highlevel.stale_frames", "pymoult.highlevel.file_watch",
                  "pymoult.source_tracking", "pymoult.delivery.dask_cluster"]
#: The ``pymoult`` command: the top tier, which may use everything and which nothing uses.
COMMAND_MODULES = {"cli.py", "demo.py", "__main__.py", "exit_status.py"}
#: The original Pymoult's import path for the listeners, kept as re-exports from the tier above.
ORIGINAL_LISTENER_PATH = PACKAGE / "highlevel" / "listener.py"


def imported_modules(path):
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module
            if module:  # "from . import protocol": the names may be modules too
                yield from (f"{module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("path", sorted((PACKAGE / "lowlevel").glob("*.py")), ids=str)
def test_lowlevel_never_imports_highlevel(path):
    assert not [m for m in imported_modules(path) if m and m.startswith("pymoult.highlevel")]


@pytest.mark.parametrize("path", sorted((PACKAGE / "highlevel").glob("*.py")), ids=str)
def test_highlevel_never_imports_delivery_but_to_keep_the_original_path(path):
    delivery = [m for m in imported_modules(path) if m and m.startswith("pymoult.delivery")]
    if path == ORIGINAL_LISTENER_PATH:
        assert delivery[0] == "pymoult.delivery"  # re-exports only: nothing else in the module
        tree = ast.parse(path.read_text())
        assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in tree.body)
    else:
        assert not delivery


@pytest.mark.parametrize("path", sorted((PACKAGE / "delivery").glob("*.py")), ids=str)
def test_delivery_reads_the_managers_through_their_public_names(path):
    tree = ast.parse(path.read_text())
    private = [f"{node.module}.{alias.name}" for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.level + bool(node.module) > 0
               for alias in node.names if alias.name.startswith("_")]
    assert not private, f"{path.name} imports {private}"
    reaches = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
               and node.attr.startswith("_") and not node.attr.startswith("__")
               and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]
    assert not reaches, f"{path.name} reaches into {sorted(set(reaches))}"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.glob("*.py")
                                        if p.name not in COMMAND_MODULES), ids=str)
def test_core_modules_import_no_tier_above_them(path):
    tiers = ("pymoult.lowlevel", "pymoult.highlevel", "pymoult.delivery")
    offenders = [m for m in imported_modules(path) if m and m.startswith(tiers)]
    assert not offenders, f"{path.name} imports {offenders}"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if p.name not in COMMAND_MODULES), ids=str)
def test_the_library_never_imports_the_command(path):
    commands = {f"pymoult.{name[:-3]}" for name in COMMAND_MODULES}
    assert not [m for m in imported_modules(path) if m in commands]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_exists_and_is_documented(name):
    module = importlib.import_module(name)
    assert module.__doc__
    assert len(set(module.__all__)) == len(module.__all__), "a name is exported twice"
    for public in module.__all__:
        obj = getattr(module, public)
        if callable(obj):
            assert obj.__doc__, f"{name}.{public} has no docstring"


def test_api_names_from_the_original_pymoult_exist():
    from pymoult import threads
    from pymoult.highlevel import listener, managers, updates
    from pymoult.lowlevel import alterability, data_access, data_update, relinking, stack

    for module, names in [
        (threads, "DSU_Thread RebootException start_active_update set_active_update_function "
                  "get_thread_by_name set_thread_trace"),
        (alterability, "staticUpdatePoint setupWaitStaticPoints waitStaticPoints "
                       "checkStaticPointsReached cleanFailedStaticPoints isFunctionInStack "
                       "isFunctionInAnyStack checkQuiescenceOfFunction checkQuiescenceOfFunctions "
                       "waitQuiescenceOfFunction waitQuiescenceOfFunctions resumeSuspendedThreads "
                       "isAnyCodeInAnyStack isClassInAnyStack setupForceQuiescence "
                       "waitForceQuiescence checkForceQuiescence cleanForceQuiescence "
                       "cleanFailedForceQuiescence"),
        (stack, "resetThread switchMain rebootFunction"),
        (relinking, "redefineFunction"),
        (data_update, "updateToClass redefineClass addFieldToClass addMethodToClass "
                      "generateMixinUser applyMixinToObject updateLocalVar updateLocalVarInThread"),
        (data_access, "DataAccessor HeapWalker traverseHeap startEagerUpdate startLazyUpdate"),
        (updates, "Update SafeRedefineUpdate SafeRedefineMethodUpdate EagerConversionUpdate "
                  "LazyConversionUpdate ThreadRebootUpdate HeapTraversalUpdate "
                  "UpdateDefinitionError isApplied"),
        (managers, "Manager ThreadedManager fetch_manager generatePreconfiguredManager"),
        (listener, "Listener PipeListener get_app_listener log set_logpath set_loglevel"),
    ]:
        for name in names.split():
            assert name in module.__all__, f"{module.__name__}.{name}"
    methods = "switch suspend resume is_suspended wait_suspended set_active set_passive"
    for method in methods.split():
        assert callable(getattr(threads.DSU_Thread, method))


#: Import cycles still to be broken (issue 18); a new one fails the test below.
KNOWN_CYCLES = set()


def module_name(path):
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__")


def test_no_two_modules_import_each_other_even_lazily():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    imports = {}
    for name, path in modules.items():
        found = set()
        for target in imported_modules(path):
            if not target:
                continue
            # "from . import protocol" names a module in the package: count it as one
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
        imports[name] = found
    pairs = {frozenset({a, b}) for a, targets in imports.items() for b in targets
             if a in imports.get(b, ())}
    assert pairs - KNOWN_CYCLES == set(), sorted(sorted(pair) for pair in pairs - KNOWN_CYCLES)
    assert KNOWN_CYCLES <= pairs, "a known cycle is gone: take it off KNOWN_CYCLES"


def test_the_cycle_test_sees_a_lazy_import():
    """What the test above reads: an import inside a function counts."""
    found = set(imported_modules(PACKAGE / "highlevel" / "updates.py"))
    assert "pymoult.highlevel.module_update" in found  # updates' __getattr__, a lazy one


def test_the_import_tests_see_an_import_made_only_for_type_hints():
    """An ``if TYPE_CHECKING:`` import counts as well: type hints keep to the tiers and make no
    cycle either (a lower tier states what it needs of a higher one's object as a Protocol)."""
    found = set(imported_modules(PACKAGE / "lowlevel" / "relinking.py"))
    assert "pymoult.lowlevel.alterability" in found  # the gate watcher's class, for hints only


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=str)
def test_no_module_imports_another_modules_underscore_names(path):
    """Private *modules* (``_cpython``, ``_stacks``...) share plain names; a name starting with
    an underscore stays in its module."""
    modules = {module.stem for module in PACKAGE.rglob("_*.py")}  # "from .. import _cpython"
    modules |= {init.parent.name for init in PACKAGE.rglob("_*/__init__.py")}  # _thread_trace
    private = [f"{node.module or '.'}: {alias.name}" for node in ast.walk(ast.parse(
        path.read_text())) if isinstance(node, ast.ImportFrom) for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
        and alias.name not in modules]
    assert not private, f"{path.name} imports {private}"


def test_the_underscore_test_sees_a_private_package():
    """``from . import _thread_trace`` names a private package, not a private name."""
    assert (PACKAGE / "_thread_trace" / "__init__.py").exists()
    assert "pymoult._thread_trace" in set(imported_modules(PACKAGE / "threads.py"))


THREAD_TRACE = PACKAGE / "_thread_trace"
THREAD_TRACE_BACKENDS = sorted(path for path in THREAD_TRACE.glob("*.py")
                               if path.name not in ("__init__.py", "common.py"))


@pytest.mark.parametrize("path", THREAD_TRACE_BACKENDS, ids=str)
def test_each_thread_trace_backend_stands_on_the_shared_module_alone(path):
    """A backend of ``pymoult._thread_trace`` imports, of its package, ``common`` only: never the
    package (which chooses the backend) nor another backend (each is imported only on the CPython
    versions it serves)."""
    assert len(THREAD_TRACE_BACKENDS) >= 3  # monitoring, ctypes_settrace, unsupported
    inside = {m for m in imported_modules(path) if m and m.startswith("pymoult._thread_trace")}
    inside = {m for m in inside if not m.startswith("pymoult._thread_trace.common.")}
    assert inside <= {"pymoult._thread_trace.common"}, f"{path.name} imports {sorted(inside)}"
