import textwrap
import types

import pytest

from pymoult.errors import PymoultTypeError, RedefinitionError, TargetNotFoundError
from pymoult.lowlevel.journal import Journal
from pymoult.lowlevel.relinking import redefineFunction, redefineMethod

pytestmark = pytest.mark.timeout(10)


def load(source, name="app"):
    """A fresh module from source, as if imported."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


OLD = """
import functools
counter = 0
def greet(who):
    global counter
    counter += 1
    return f"hello {who}"
def make_adder(n):
    def add(x):
        return x + n
    return add
add_two = make_adder(2)
def deco(function):
    @functools.wraps(function)
    def wrapper(*args):
        return ("wrapped", function(*args))
    return wrapper
@deco
def decorated(x):
    return x
@functools.lru_cache(maxsize=None)
def square(x):
    return x * x
"""

NEW = """
import functools
counter = 1000
def helper(who):
    return who.upper()
def greet(who):
    global counter
    counter += 1
    return f"HI {helper(who)}"
def make_adder(n):
    def add(x):
        return x + n * 10
    return add
add_two = make_adder(2)
def deco(function):
    @functools.wraps(function)
    def wrapper(*args):
        return ("wrapped", function(*args))
    return wrapper
@deco
def decorated(x):
    return -x
@functools.lru_cache(maxsize=None)
def square(x):
    return x * x * x
"""


@pytest.fixture
def app():
    return load(OLD)


@pytest.fixture
def new():
    return load(NEW, "app_v2")


def test_every_reference_runs_the_new_code_and_state_is_kept(app, new):
    alias = app.greet  # as after `from app import greet`
    callbacks = [app.greet]
    app.greet("x")
    assert app.counter == 1
    result = redefineFunction(app, "greet", new.greet)
    assert result is alias and app.greet is alias  # identity kept
    assert alias("bob") == callbacks[0]("bob") == "HI BOB"
    assert app.counter == 3  # module state kept, not re-initialised from the new version
    assert app.helper is new.helper  # the new code's missing global was brought over


def test_closures_keep_their_live_cells(app, new):
    add = app.add_two
    assert add(1) == 3
    redefineFunction(app, "add_two", new.add_two)
    assert add(1) == 21  # new code, live cell n == 2


def test_changed_free_variables_are_refused_with_both_sets(app):
    other = load("""
    def make(n, m):
        def add(x):
            return x + n + m
        return add
    add_two = make(1, 2)
    """, "other")
    with pytest.raises(RedefinitionError,
                       match=r"^cannot redefine 'app\.make_adder\.<locals>\.add' in place: free "
                             r"variables changed \(before: \('n',\); after: \('m', 'n'\)\)$"):
        redefineFunction(app, "add_two", other.add_two)
    assert app.add_two(1) == 3  # nothing changed


def test_rebind_fallback_when_asked(app, caplog):
    other = load("""
    def make(n, m):
        def add(x):
            return x + n + m
        return add
    add_two = make(1, 2)
    """, "other")
    before = app.add_two
    bound = redefineFunction(app, "add_two", other.add_two, fallback="rebind")
    assert app.add_two is bound and bound(1) == 4
    assert before(1) == 3  # a reference taken before keeps the old code: reported, not hidden
    assert "references taken before keep the old code" in caplog.text


def test_decorated_functions_are_updated_through_their_wrappers(app, new):
    wrapper = app.decorated
    assert wrapper(3) == ("wrapped", 3)
    redefineFunction(app, "decorated", new.decorated)
    assert wrapper(3) == ("wrapped", -3)
    assert wrapper.__wrapped__ is not new.decorated.__wrapped__  # the live inner function stays


def test_lru_cache_is_cleared(app, new):
    square = app.square
    assert square(3) == 9
    redefineFunction(app, "square", new.square)
    assert square(3) == 27


def test_added_decorator_is_refused(app):
    other = load("""
    import functools
    def deco(f):
        @functools.wraps(f)
        def wrapper(*a):
            return f(*a)
        return wrapper
    @deco
    def greet(who):
        return who
    """, "other")
    with pytest.raises(RedefinitionError, match="its decorators changed"):
        redefineFunction(app, "greet", other.greet)


def test_generator_started_before_keeps_its_code():
    module = load("def gen():\n    yield 1\n    yield 2\n")
    running = module.gen()
    assert next(running) == 1
    redefineFunction(module, "gen", load("def gen():\n    yield 10\n    yield 20\n", "v2").gen)
    assert next(running) == 2
    assert list(module.gen()) == [10, 20]


CLASSES_OLD = """
class Base:
    def who(self):
        return "base"
class Service:
    VERSION = 1
    def __init__(self):
        self.calls = 0
    def handle(self, x):
        self.calls += 1
        return ("old", x)
    @staticmethod
    def static(x):
        return ("old static", x)
    @classmethod
    def klass(cls):
        return ("old class", cls.__name__)
    @property
    def value(self):
        return "old value"
class Child(Base):
    def who(self):
        return "child of " + super().who()
    def plain(self):
        return "plain"
"""

CLASSES_NEW = """
class Base:
    def who(self):
        return "NEW BASE (wrong class!)"
class Service:
    VERSION = 2
    def handle(self, x):
        self.calls += 1
        return ("new", x)
    @staticmethod
    def static(x):
        return ("new static", x)
    @classmethod
    def klass(cls):
        return ("new class", cls.__name__)
    @property
    def value(self):
        return "new value"
    @value.setter
    def value(self, v):
        self._value = v
class Child(Base):
    def who(self):
        return "CHILD of " + super().who()
    def plain(self):
        return "plain with " + super().who()
"""


@pytest.fixture
def classes():
    return load(CLASSES_OLD, "svc"), load(CLASSES_NEW, "svc_v2")


def test_methods_bound_before_run_the_new_code(classes):
    old, new = classes
    service = old.Service()
    bound = service.handle
    assert bound(1) == ("old", 1)
    redefineMethod(old.Service, "handle", new.Service.__dict__["handle"])
    assert bound(2) == ("new", 2) and service.handle(3) == ("new", 3)
    assert service.calls == 3  # the instance's state is untouched


def test_static_class_methods_and_properties(classes):
    old, new = classes
    service = old.Service()
    static, klass = old.Service.static, old.Service.klass
    redefineMethod(old.Service, "static", new.Service.__dict__["static"])
    redefineMethod(old.Service, "klass", new.Service.__dict__["klass"])
    redefineMethod(old.Service, "value", new.Service.__dict__["value"])
    assert static(1) == ("new static", 1)
    assert klass() == ("new class", "Service")
    assert service.value == "new value"
    service.value = 5  # the setter the new version added
    assert service._value == 5


def test_super_keeps_using_the_live_class(classes):
    old, new = classes
    child = old.Child()
    who = child.who
    redefineMethod(old.Child, "who", new.Child.__dict__["who"])
    assert who() == "CHILD of base"  # super() resolved against the live classes
    assert isinstance(child, old.Child)


def test_super_added_needs_the_rebind_fallback(classes):
    old, new = classes
    child = old.Child()
    with pytest.raises(RedefinitionError, match=r"free variables changed \(before: \(\); "
                                                r"after: \('__class__',\)\)"):
        redefineMethod(old.Child, "plain", new.Child.__dict__["plain"])
    redefineMethod(old.Child, "plain", new.Child.__dict__["plain"], fallback="rebind")
    assert child.plain() == "plain with base"


def test_kind_change_and_inherited_and_missing_methods_are_refused(classes):
    old, new = classes
    with pytest.raises(RedefinitionError,
                       match="it was a function and the new version is a staticmethod"):
        redefineMethod(old.Service, "handle", staticmethod(lambda x: x))
    with pytest.raises(TargetNotFoundError, match="it is inherited from Base: redefine it there"):
        redefineMethod(type("Sub", (old.Base,), {}), "who", lambda self: 1)
    with pytest.raises(TargetNotFoundError, match="defines no 'nothing'"):
        redefineMethod(old.Service, "nothing", lambda self: 1)
    with pytest.raises(PymoultTypeError, match="expected a class"):
        redefineMethod(old.Service(), "handle", lambda self: 1)


def test_bad_targets_and_inputs(app, new):
    with pytest.raises(TargetNotFoundError,
                       match=r"^module 'app' has no function 'gone' \(any more\)$"):
        redefineFunction(app, "gone", new.greet)
    stale = app.greet
    app.greet = lambda who: who
    with pytest.raises(TargetNotFoundError, match="is no longer"):
        redefineFunction(app, stale, new.greet)
    with pytest.raises(PymoultTypeError, match="expected a module"):
        redefineFunction("app", "greet", new.greet)
    with pytest.raises(PymoultTypeError, match="the new version must be a Python function, got 3"):
        redefineFunction(app, "add_two", 3)
    with pytest.raises(PymoultTypeError, match="fallback must be one of"):
        redefineFunction(app, "add_two", new.add_two, fallback="maybe")


# -- the journal ------------------------------------------------------------------------------


def test_rollback_restores_every_reference_and_global(app, new, classes):
    old_classes, new_classes = classes
    alias, service = app.greet, old_classes.Service()
    bound = service.handle
    journal = Journal("update 1")
    with journal.recording():
        redefineFunction(app, "greet", new.greet)
        redefineFunction(app, "decorated", new.decorated)
        redefineMethod(old_classes.Service, "value", new_classes.Service.__dict__["value"])
        redefineMethod(old_classes.Service, "handle", new_classes.Service.__dict__["handle"])
    assert [str(op) for op in journal] == [
        "set globals of app['helper'] (new)",
        "swap code of app.greet",
        "swap code of app.decorated",  # the wrapper layer
        "swap code of app.decorated",  # the function it wraps
        "swap code of svc.Service.value",
        "set svc.Service.value (was property svc.Service.value)",
        "swap code of svc.Service.handle",
    ]
    assert alias("x") == "HI X"
    journal.rollback()
    assert alias("x") == "hello x" and app.greet is alias
    assert not hasattr(app, "helper")
    assert app.decorated(2) == ("wrapped", 2)
    assert bound(1) == ("old", 1)
    assert service.value == "old value"
    with pytest.raises(AttributeError):
        service.value = 3  # the setter is gone again
    assert journal.state == "rolled back"


def test_failed_redefinition_records_nothing(app):
    other = load("def make(a, b):\n    def add(x):\n        return a + b\n    return add\n"
                 "add_two = make(1, 2)\n", "other")
    journal = Journal()
    with journal.recording(), pytest.raises(RedefinitionError):
        redefineFunction(app, "add_two", other.add_two)
    assert len(journal) == 0


def test_decorator_without_wraps_is_followed_through_its_closure():
    source = """
def deco(function):
    def wrapper(*args):
        return ("wrapped", function(*args))
    return wrapper
@deco
def handle(x):
    return VERSION + str(x)
VERSION = "{v}"
"""
    old = load(source.replace("{v}", "v1"), "nowraps")
    new = load(source.replace("{v}", "v2").replace("VERSION + str(x)", "VERSION + '!' + str(x)"),
               "nowraps_v2")
    handle = old.handle
    redefineFunction(old, "handle", new.handle)
    assert handle(1) == ("wrapped", "v1!1")  # new inner code, live module state


def test_only_real_globals_are_brought_over_and_they_may_shadow_builtins():
    old = load("size = 'module size'\ndef helper(obj):\n    return obj\n", "globs")
    new = load("""
def len(obj):
    return 'my len'
class Box:
    size = 3
def helper(obj):
    return len(obj), obj.size
""", "globs_v2")
    journal = Journal()
    with journal.recording():
        redefineFunction(old, "helper", new.helper)
    assert old.helper(new.Box()) == ("my len", 3)
    names = [str(op) for op in journal if "globals of" in str(op)]
    assert names == ["set globals of globs['len'] (new)"]  # not 'size': an attribute name


def test_property_gaining_super_in_a_class_update():
    from pymoult.lowlevel.data_update import redefineClass

    old = load("""
class Base:
    @property
    def name(self):
        return "base"
class Item(Base):
    @property
    def name(self):
        return "item"
""", "props")
    new = load("""
class Base:
    @property
    def name(self):
        return "NEW base"
class Item(Base):
    @property
    def name(self):
        return "item of " + super().name
""", "props_v2")
    item = old.Item()
    redefineClass(old, "Item", new.Item)
    assert item.name == "item of base"
    with pytest.raises(RedefinitionError):
        redefineMethod(old.Base, "name", load("class B:\n    @property\n    def name(self):\n"
                                             "        return super().name\n",
                                             "p3").B.__dict__["name"])


def test_a_method_rebound_by_the_fallback_finds_the_new_versions_globals():
    old = load("class Child:\n    def plain(self):\n        return 'old'\n", "rebind_old")
    new = load("""
import math
SCALE = 3
class Base:
    pass
class Child(Base):
    def plain(self):
        return (math.floor(2.5) * SCALE, type(super()).__name__)  # super(): not in place
""", "rebind_new")
    journal = Journal("rebind")
    redefineMethod(old.Child, "plain", new.Child.__dict__["plain"], fallback="rebind",
                   journal=journal)
    assert old.Child().plain() == (6, "super")  # math and SCALE: not in the live module
    assert old.math is new.math and old.SCALE == 3
    journal.rollback()
    assert not hasattr(old, "math") and not hasattr(old, "SCALE")
    assert old.Child().plain() == "old"


def test_the_fallback_rebinds_a_method_to_a_decorated_new_version_as_it_is():
    old = load("class Service:\n    def total(self, n):\n        return n\n", "cached_old")
    new = load("import functools\nclass Service:\n    @functools.lru_cache\n"
               "    def total(self, n):\n        return n * 2\n", "cached_new")
    with pytest.raises(RedefinitionError, match="decorators changed"):
        redefineMethod(old.Service, "total", new.Service.__dict__["total"])
    bound = redefineMethod(old.Service, "total", new.Service.__dict__["total"],
                           fallback="rebind")
    assert hasattr(bound, "cache_clear") and old.Service().total(4) == 8
