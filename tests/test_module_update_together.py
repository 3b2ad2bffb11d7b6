"""Modules that change together, as when a new release of a package is installed over the
running one: ``ModuleUpdate.together`` evaluates each new version on trial as a fresh import of
them all would (a module importing another gets the other's new version), and applies them in
the order their imports need. And a changed ``if``/``try`` that only chooses definitions (``if
PY3:``, ``try: import x except ImportError:``) is run again like the definitions it holds."""

import itertools
import sys
import textwrap

import pytest

from pymoult.errors import ModuleUpdateError
from pymoult.highlevel.module_update import _defines_only
from pymoult.highlevel.updates import ModuleUpdate, UpdateState

from modules import WAIT, loaded, update_to

pytestmark = pytest.mark.timeout(30)

_packages = itertools.count()


@pytest.fixture
def package(tmp_path):
    """``package(files)`` writes a package (file name -> source) under a fresh name, imports
    its modules in the order given and returns its name; removed from sys.modules afterwards."""
    names = []

    def make(files):
        name = f"pm_pkg_{next(_packages)}"
        names.append(name)
        (tmp_path / name).mkdir()
        for file, source in files.items():
            (tmp_path / name / file).write_text(textwrap.dedent(source))
        for file in files:
            module = name if file == "__init__.py" else f"{name}.{file[:-3]}"
            __import__(module)
        return name

    sys.path.insert(0, str(tmp_path))
    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


COMPAT_V1 = "import sys\nA = 1\n"
COMPAT_V2 = "import sys\nA = 1\nB = 2\n"
USER_V1 = "from .compat import A\n\n\ndef total():\n    return A\n"
USER_V2 = "from .compat import A, B\n\n\ndef total():\n    return A + B\n"


def test_a_new_version_importing_a_name_the_other_new_version_adds(package, manager):
    name = package({"__init__.py": "", "compat.py": COMPAT_V1, "user.py": USER_V1})
    user, compat = sys.modules[f"{name}.user"], sys.modules[f"{name}.compat"]
    total = user.total
    # made one by one, the new user module is evaluated against the running compat
    with pytest.raises(ModuleUpdateError, match="cannot import name 'B'"):
        ModuleUpdate(user, source=USER_V2)
    # together (the user listed first): compat's new version first, on trial and when applied
    update = ModuleUpdate.together({user: USER_V2, f"{name}.compat": COMPAT_V2})
    assert update.name == f"update modules {name}.user, {name}.compat"
    assert [plan.name for plan in update.plans] == [f"{name}.compat", f"{name}.user"]
    assert not hasattr(compat, "B")  # on trial: nothing changed
    manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.APPLIED
    assert compat.B == 2 and user.total is total and total() == 3


def test_the_package_and_its_submodules_imported_every_way(package, manager):
    name = package({"__init__.py": "VERSION = '1.0'\n", "compat.py": COMPAT_V1,
                    "user.py": "from . import VERSION\n\nBANNER = 'v' + VERSION\n"})
    user = sys.modules[f"{name}.user"]
    new_user = (f"from . import VERSION, compat\nimport {name}.compat as other\n"
                f"import {name}.compat\n\n"
                f"BANNER = 'v' + VERSION + ' ' + str(compat.B + other.B + {name}.compat.B)\n")
    update = ModuleUpdate.together({f"{name}.user": new_user, name: "VERSION = '2.0'\n",
                                    f"{name}.compat": COMPAT_V2})
    assert [plan.name for plan in update.plans] == [name, f"{name}.compat", f"{name}.user"]
    manager.apply_update(update, timeout=WAIT)
    assert user.BANNER == "v2.0 6" and sys.modules[name].VERSION == "2.0"


def test_an_import_cycle_sees_the_module_being_planned_as_it_is(package, manager):
    name = package({"__init__.py": "", "a.py": "X = 1\n\nfrom . import b\n",
                    "b.py": "from . import a\n"})
    a, b = sys.modules[f"{name}.a"], sys.modules[f"{name}.b"]
    update = ModuleUpdate.together({a: "X = 2\n\nfrom . import b as bee\n",
                                    b: "from . import a as A\n\nSEEN = A.X\n"})
    # a's trial imports b, whose trial imports a: it gets a's stand-in, partly run (X = 2)
    assert [plan.name for plan in update.plans] == [f"{name}.b", f"{name}.a"]
    manager.apply_update(update, timeout=WAIT)
    # applied in that order, b's statements run before a's: b sees a's X as it was (the limit
    # of applying module by module; a fresh import would interleave them)
    assert b.SEEN == 1 and a.X == 2 and a.bee is b


def test_a_failing_module_is_named_even_when_another_imports_it(package):
    name = package({"__init__.py": "", "compat.py": COMPAT_V1, "user.py": USER_V1})
    compat = sys.modules[f"{name}.compat"]
    with pytest.raises(ModuleUpdateError) as caught:
        ModuleUpdate.together({f"{name}.user": USER_V2,
                               f"{name}.compat": COMPAT_V2 + "raise RuntimeError('boom')\n"})
    assert f"the new version of '{name}.compat' raised RuntimeError('boom')" in str(caught.value)
    assert not hasattr(compat, "B")


def test_together_rejects_bad_arguments(package):
    name = package({"__init__.py": "", "compat.py": COMPAT_V1})
    with pytest.raises(Exception, match="given twice"):
        ModuleUpdate.together({name: None, sys.modules[name]: None})
    with pytest.raises(Exception, match="must be a str or None"):
        ModuleUpdate.together({name: b"A = 1\n"})
    with pytest.raises(Exception, match="no module 'pm_no_such_module' is loaded"):
        ModuleUpdate.together(["pm_no_such_module"])
    with pytest.raises(Exception, match="at least one module"):
        ModuleUpdate.together([])


def test_a_module_update_made_alone_is_as_before(tmp_path, manager):
    app = loaded(tmp_path, "import json\n\nA = 1\n")
    update_to(manager, app, "import json\n\nA = 2\n")
    assert app.A == 2 and "__import__" not in vars(app)  # no trial builtins leak


# -- a changed if/try that only defines names -----------------------------------------------------

PY3_V1 = """\
import sys

if sys.version_info[0] >= 3:
    def text(s):
        return s
else:
    def text(s):
        return unicode(s)  # noqa: F821
"""

PY3_V2 = """\
import sys

if sys.version_info[0] >= 3:
    def text(s):
        return s.upper()

    PermissionError = PermissionError
else:
    def text(s):
        return unicode(s)  # noqa: F821

    class PermissionError(EnvironmentError):
        pass
"""


def test_a_changed_if_that_only_defines_names_runs_again(tmp_path, manager):
    app = loaded(tmp_path, PY3_V1)
    text = app.text
    update = update_to(manager, app, PY3_V2)
    assert app.PermissionError is PermissionError  # the name the new version adds
    assert app.text is text and text("a") == "A"  # the function, updated in place
    assert f"run {app.__name__}.<module code> (line 3): `if`/`try` that only defines names, " \
        "run like a definition" in [str(step) for step in update.steps]


def test_a_changed_try_import_runs_again(tmp_path, manager):
    app = loaded(tmp_path, "try:\n    import json\nexcept ImportError:\n    json = None\n")
    update_to(manager, app, "try:\n    import json\n    import csv\nexcept ImportError:\n"
                            "    json = csv = None\n")
    assert app.csv is sys.modules["csv"]


def test_a_changed_if_that_acts_on_state_is_still_noted_not_run(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\nif True:\n    calls.append(1)\n")
    update = update_to(manager, app, "calls = []\nif True:\n    calls.append(2)\n    X = 1\n")
    assert app.calls == [1] and not hasattr(app, "X")
    assert [step.action for step in update.steps] == ["note"]


@pytest.mark.parametrize("source, defines", [
    ("if A:\n    import x\n    from y import z as w\nelse:\n    x = w = None\n", True),
    ("try:\n    from y import *\nexcept ImportError:\n    pass\n", False),
    ("if A:\n    '''doc'''\n    a, [b, *c] = 1, [2, 3]\n    d: int = 1\n", True),
    ("try:\n    import x\nexcept ImportError:\n    raise\nelse:\n    assert x\n"
     "finally:\n    pass\n", True),
    ("if A:\n    if B:\n        def f():\n            g()\n    else:\n        class C:\n"
     "            g()\n", True),  # what bodies of definitions do is not run here
    ("if A:\n    try:\n        g()\n    except E:\n        pass\n", False),
    ("if A:\n    x += 1\n", False),
    ("if A:\n    x.y = 1\n", False),
    ("if A:\n    x[0] = 1\n", False),
    ("if A:\n    for i in y:\n        pass\n", False),
    ("if A:\n    with y:\n        import x\n", False),
    ("if A:\n    del x\n", False),
    ("with y:\n    import x\n", False),
    ("for x in y:\n    pass\n", False),
    ("x = 1\n", False),  # a definition already, not a compound statement
])
def test_what_only_defines_names(source, defines):
    import ast
    assert _defines_only(ast.parse(source).body[0]) is defines


def test_a_definition_moved_under_if_is_not_removed(tmp_path, manager, flow):
    app = loaded(tmp_path, "import sys\n\ndef helper():\n    return 'v1'\n")
    helper = app.helper
    update = update_to(manager, app, "import sys\n\nif sys.platform:\n    def helper():\n"
                                     "        return 'v2'\n")
    if flow.endswith("untracked"):  # compared with the live module: an ``if`` cannot be judged
        assert app.helper is helper and helper() == "v1"  # kept, not deleted
        assert [s.action for s in update.steps] == ["undecided", "undecided"]
        return
    # an ``if`` that only defines names runs like a definition: updated in place, not deleted
    assert app.helper is helper and helper() == "v2"
    assert [s.action for s in update.steps] == ["update function", "run"]


def test_a_definition_moved_under_an_if_that_acts_is_kept_not_removed(tmp_path, manager, flow):
    app = loaded(tmp_path, "import sys\n\ndef helper():\n    return 'v1'\n")
    update = update_to(manager, app, "import sys\n\nif sys.platform:\n    print('here')\n"
                                     "    def helper():\n        return 'v2'\n")
    assert app.helper() == "v1"  # kept (module code is not re-run), not deleted
    expected = ["undecided", "undecided"] if flow.endswith("untracked") else ["note"]
    assert [s.action for s in update.steps] == expected
