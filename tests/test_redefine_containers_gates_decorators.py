"""redefineFunction as programs written for the original Pymoult call it.

The original set the attribute on whatever container it was given (module, class, instance), was
called on a name that a forced-quiescence gate had just replaced, and was given plain new versions
of decorated functions. Each test holds a reference taken before the update and checks that it runs
the new code afterwards.
"""

import functools
import logging
import re
import textwrap
import threading
import types

import pytest

from pymoult.errors import PymoultTypeError, RedefinitionError, TargetNotFoundError
from pymoult.lowlevel.alterability import (cleanFailedForceQuiescence, cleanForceQuiescence,
                                           setupForceQuiescence, waitForceQuiescence)
from pymoult.lowlevel.journal import Journal
from pymoult.lowlevel.relinking import redefineFunction, redefineMethod

pytestmark = pytest.mark.timeout(20)

WAIT = 5.0


def load(source, name):
    """A fresh module from source, as if imported."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


# -- classes as containers ----------------------------------------------------------------------

SERVICE = """
class Service:
    def handle(self, x):
        return ("old", x)
    @staticmethod
    def parse(text):
        return ("old parse", text)
    @classmethod
    def create(cls):
        return ("old create", cls.__name__)
    @property
    def status(self):
        return "old status"
class Special(Service):
    pass
"""


@pytest.fixture
def svc():
    return load(SERVICE, "svc")


def test_a_class_method_given_with_its_class_is_updated_in_place(svc):
    service = svc.Service()
    bound = service.handle

    def handle(self, x):
        return ("new", x)

    result = redefineFunction(svc.Service, svc.Service.handle, handle)
    assert result is svc.Service.__dict__["handle"]  # the live function, identity kept
    assert bound(1) == ("new", 1) and service.handle(2) == ("new", 2)


def test_a_staticmethod_stays_static_when_given_a_plain_new_version(svc):
    parse = svc.Service.parse  # the function behind the staticmethod, as the original passed it
    service = svc.Service()

    def new_parse(text):
        return ("new parse", text)

    redefineFunction(svc.Service, svc.Service.parse, new_parse)
    assert isinstance(svc.Service.__dict__["parse"], staticmethod)
    assert parse("a") == ("new parse", "a")
    assert service.parse("b") == ("new parse", "b")  # no self passed: still static


def test_a_classmethod_stays_a_classmethod_when_given_a_plain_new_version(svc):
    create = svc.Service.create  # a method bound to the class

    def new_create(cls):
        return ("new create", cls.__name__)

    redefineFunction(svc.Service, svc.Service.create, new_create)
    assert isinstance(svc.Service.__dict__["create"], classmethod)
    assert create() == ("new create", "Service")
    assert svc.Special.create() == ("new create", "Special")
    assert svc.Special().create() == ("new create", "Special")


def test_a_property_given_as_itself_is_redefined_by_name(svc):
    service = svc.Service()
    new_status = property(lambda self: "new status")
    redefineFunction(svc.Service, svc.Service.status, new_status)  # found without a __name__
    assert service.status == "new status"
    assert isinstance(svc.Service.__dict__["status"], property)


def test_a_class_member_by_name_journaled_and_rolled_back(svc):
    bound = svc.Service().handle
    journal = Journal("class")
    with journal.recording():
        redefineFunction(svc.Service, "handle", lambda self, x: ("new", x))
    assert [str(op) for op in journal] == ["swap code of svc.Service.handle"]
    assert bound(1) == ("new", 1)
    journal.rollback()
    assert bound(1) == ("old", 1)


def test_class_members_missing_inherited_or_replaced_are_refused(svc):
    with pytest.raises(TargetNotFoundError, match=r"^class Service defines no 'gone'$"):
        redefineFunction(svc.Service, "gone", lambda self: 1)
    with pytest.raises(TargetNotFoundError, match=r"^class Special defines no 'handle'; it is "
                                                  r"inherited from Service: redefine it there$"):
        redefineFunction(svc.Special, svc.Special.handle, lambda self, x: x)
    stale = svc.Service.handle
    svc.Service.handle = lambda self, x: ("replaced", x)
    with pytest.raises(TargetNotFoundError, match=r"^Service\.handle is no longer <function "):
        redefineFunction(svc.Service, stale, lambda self, x: x)
    assert svc.Service().handle(1) == ("replaced", 1)  # nothing changed


# -- instances as containers --------------------------------------------------------------------


def test_a_function_held_by_an_instance_is_updated_in_place():
    module = load("def on_event(name):\n    return ('old', name)\n", "handlers")
    listener = types.SimpleNamespace(on_event=module.on_event)
    callback = listener.on_event
    redefineFunction(listener, listener.on_event, lambda name: ("new", name))
    assert callback("x") == ("new", "x") and listener.on_event is callback


def test_an_instance_attribute_in_its_own_dict_by_name_with_rollback():
    module = load("""
    class Button:
        def __init__(self):
            self.on_click = lambda: "old click"
    """, "ui")
    button = module.Button()
    callback = button.on_click
    journal = Journal("instance")
    with journal.recording():
        redefineFunction(button, "on_click", lambda: "new click")
    assert callback() == "new click"
    journal.rollback()
    assert callback() == "old click"


def test_an_instance_without_the_name_of_its_own_is_refused(svc):
    service = svc.Service()
    with pytest.raises(TargetNotFoundError, match=r"^Service object has no function 'handle' of "
                                                  r"its own; it is a method of class Service: "
                                                  r"redefine it there$"):
        redefineFunction(service, service.handle, lambda self, x: x)
    with pytest.raises(TargetNotFoundError,
                       match=r"^SimpleNamespace object has no function 'gone' of its own$"):
        redefineFunction(types.SimpleNamespace(), "gone", lambda: 1)
    assert service.handle(1) == ("old", 1)


# -- modules, as before -------------------------------------------------------------------------


def test_a_module_function_is_updated_in_place_as_before():
    module = load("def greet(who):\n    return 'hello ' + who\n", "greeter")
    alias = module.greet
    assert redefineFunction(module, alias, lambda who: "hi " + who) is alias
    assert alias("bob") == "hi bob" and module.greet is alias


def test_a_function_bound_under_another_name_is_found():
    module = load("""
    def make_handler():
        def inner(x):
            return ("old", x)
        return inner
    handle = make_handler()
    """, "factory")
    handle = module.handle
    redefineFunction(module, handle, load("def inner(x):\n    return ('new', x)\n", "v2").inner)
    assert handle(1) == ("new", 1) and module.handle is handle


@pytest.mark.parametrize("container, shown", [(None, "None"), (3, "3"), ("app", "'app'"),
                                              ((1, 2), r"\(1, 2\)")])
def test_bad_containers_are_refused_with_a_sentence(container, shown):
    with pytest.raises(PymoultTypeError, match=rf"^expected a module, a class or an object with a "
                                               rf"__dict__, got {shown}$"):
        redefineFunction(container, "greet", lambda: 1)


def test_a_bad_function_argument_is_refused_with_a_sentence():
    module = load("x = 3\n", "numbers")
    with pytest.raises(PymoultTypeError, match=r"^expected a function or its name, got 3$"):
        redefineFunction(module, 3, lambda: 1)
    with pytest.raises(TargetNotFoundError,
                       match=r"^module 'numbers' has no function 'gone' \(any more\)$"):
        redefineFunction(module, "gone", lambda: 1)


# -- through a forced-quiescence gate -------------------------------------------------------------

TUTORIAL = """
import threading
entered = threading.Event()
leave = threading.Event()
def func_v1(x, block=False):
    if block:
        entered.set()
        leave.wait(10)
    return ("v1", x)
"""


def func_v2(x, block=False):
    return ("v2", x)


@pytest.fixture
def main():
    module = load(TUTORIAL, "tutorial_main")
    yield module
    module.leave.set()  # a failed test leaves no call blocked inside


@pytest.fixture
def gate_of(main):
    """``gate_of(function)``: setupForceQuiescence on ``main``; every gate is released at
    teardown, so that a failing test leaves no caller held."""
    setups = []

    def setup(function):
        events = setupForceQuiescence(main, function)
        setups.append(events)
        return events

    yield setup
    for _, can_continue, _ in setups:
        cleanForceQuiescence(can_continue)


def held_callers(spawn, main, watcher, count):
    """Start ``count`` threads calling ``main.func_v1`` (the gate); return their results list
    and threads once all are held."""
    results = []
    threads = [spawn(threading.Thread(target=lambda i=i: results.append(main.func_v1(i))))
               for i in range(count)]
    assert watcher.wait_held(count, WAIT)
    return results, threads


@pytest.mark.parametrize("naming", ["the gate", "the original", "the name"])
def test_the_tutorial_update_through_a_gate(spawn, main, gate_of, naming):
    original = main.func_v1
    running = spawn(threading.Thread(target=original, args=(0, True)))
    assert main.entered.wait(WAIT)
    quiescent, can_continue, watcher = gate_of(main.func_v1)  # preupdate_setup
    gate = main.func_v1
    assert gate.__pymoult_gate__ is watcher
    results, callers = held_callers(spawn, main, watcher, 2)
    main.leave.set()
    running.join(WAIT)
    assert waitForceQuiescence(quiescent, timeout=WAIT)  # wait_alterability

    function = {"the gate": main.func_v1, "the original": original, "the name": "func_v1"}[naming]
    journal = Journal("tutorial")
    with journal.recording():
        bound = redefineFunction(main, function, func_v2)  # apply
    assert bound is gate and main.func_v1 is gate  # the gate stays until released
    assert watcher.original is original and original(9) == ("v2", 9)
    assert [str(op) for op in journal] == ["swap code of tutorial_main.func_v1"]

    cleanForceQuiescence(can_continue)  # cleanup: the held callers go on, into the new code
    for caller in callers:
        caller.join(WAIT)
        assert not caller.is_alive()
    assert sorted(results) == [("v2", 0), ("v2", 1)]
    assert main.func_v1 is original  # the watcher's release bound the original again
    journal.rollback()
    assert original(3) == ("v1", 3)


def test_rollback_before_release_sends_held_callers_to_the_old_code(spawn, main, gate_of):
    original = main.func_v1
    _, can_continue, watcher = gate_of("func_v1")
    results, callers = held_callers(spawn, main, watcher, 1)
    journal = Journal("abandoned")
    with journal.recording():
        redefineFunction(main, main.func_v1, func_v2)
    journal.rollback()
    cleanFailedForceQuiescence(can_continue, watcher, main, "func_v1")
    callers[0].join(WAIT)
    assert results == [("v1", 0)] and main.func_v1 is original


def test_a_refused_update_through_a_gate_changes_nothing(spawn, main, gate_of):
    original = main.func_v1
    _, can_continue, watcher = gate_of(original)
    gate = main.func_v1
    other = load("def make(n):\n    def func_v1(x, block=False):\n        return n\n"
                 "    return func_v1\nfunc_v1 = make(1)\n", "other")
    journal = Journal("refused")
    with journal.recording(), pytest.raises(
            RedefinitionError, match=r"^cannot redefine 'tutorial_main\.func_v1' in place: free "
                                     r"variables changed \(before: \(\); after: \('n',\)\)$"):
        redefineFunction(main, gate, other.func_v1)
    assert len(journal) == 0 and main.func_v1 is gate
    results, callers = held_callers(spawn, main, watcher, 1)
    cleanForceQuiescence(can_continue)
    callers[0].join(WAIT)
    assert results == [("v1", 0)]


def test_rebinding_over_a_gate_sends_held_callers_to_the_new_binding(spawn, main, gate_of):
    original = main.func_v1
    _, can_continue, watcher = gate_of(original)
    other = load("def make(n):\n    def func_v1(x, block=False):\n        return ('v3', x, n)\n"
                 "    return func_v1\nfunc_v1 = make(1)\n", "other")
    results, callers = held_callers(spawn, main, watcher, 1)
    bound = redefineFunction(main, "func_v1", other.func_v1, fallback="rebind")
    cleanForceQuiescence(can_continue)
    callers[0].join(WAIT)
    assert results == [("v3", 0, 1)] and main.func_v1 is bound
    assert original(1) == ("v1", 1)  # rebinding, not in place: reported by a warning


# -- decorated live function, plain new version ---------------------------------------------------

ROUTES = """
import functools
ROUTES = {}
def route(path):
    def deco(function):
        @functools.wraps(function)
        def wrapper(*args):
            return ("routed", path, function(*args))
        ROUTES[path] = wrapper
        return wrapper
    return deco
@route("/hello")
def hello(who):
    return "hello " + who
@functools.lru_cache(maxsize=None)
def square(x):
    return x * x
def plain(x):
    return x
class Handler:
    @route("/handle")
    def handle(self, x):
        return ("old", x)
"""


@pytest.fixture
def web():
    return load(ROUTES, "web")


def test_a_plain_new_version_keeps_the_live_decorator(web, caplog):
    registered = web.ROUTES["/hello"]  # the route table holds the live wrapper
    inner = web.hello.__wrapped__

    def hello(who):
        return "hi " + who

    with caplog.at_level(logging.INFO, logger="pymoult"):
        assert redefineFunction(web, "hello", hello) is registered
    assert registered("bob") == ("routed", "/hello", "hi bob")  # the route still applies
    assert web.hello.__wrapped__ is inner and inner("ann") == "hi ann"
    assert caplog.record_tuples[-1][:2] == ("pymoult", logging.INFO)
    assert re.fullmatch(r"web\.hello: the new version has fewer decorators; the live ones "
                        r"\['(route\.<locals>\.deco\.<locals>\.)?wrapper'\] were kept and the "
                        r"function they wrap was updated", caplog.messages[-1])  # 3.10: no qualname


def test_a_plain_new_version_keeps_the_live_cache_and_clears_it(web):
    square = web.square
    assert square(3) == 9

    def new_square(x):
        return x * x * x

    journal = Journal("cache")
    with journal.recording():
        redefineFunction(web, square, new_square)
    assert square(3) == 27 and web.square is square
    assert square.cache_info().currsize == 1  # cleared, then refilled by the new code
    assert [str(op) for op in journal] == ["swap code of web.square", "clear cache of web.square"]
    journal.rollback()
    assert square(3) == 9  # the entry the new code made is gone with it


def test_a_decorated_method_given_a_plain_new_version(web):
    handler = web.Handler()
    bound = handler.handle

    def handle(self, x):
        return ("new", x)

    redefineMethod(web.Handler, "handle", handle)
    assert bound(1) == ("routed", "/handle", ("new", 1))
    assert web.ROUTES["/handle"](handler, 2) == ("routed", "/handle", ("new", 2))
    redefineFunction(web.Handler, web.Handler.handle, lambda self, x: ("newer", x))
    assert bound(3) == ("routed", "/handle", ("newer", 3))


def test_a_new_version_with_more_decorators_is_refused_with_nothing_changed(web):
    plain = web.plain
    cached = load("import functools\n@functools.lru_cache(maxsize=None)\ndef plain(x):\n"
                  "    return -x\n", "web_v2").plain
    journal = Journal("refused")
    with journal.recording():
        with pytest.raises(RedefinitionError, match=r"^cannot redefine 'web\.plain' in place: its "
                                                    r"decorators changed \(before: \['plain'\]; "
                                                    r"after: \['_lru_cache_wrapper', 'plain'\]\)$"):
            redefineFunction(web, "plain", cached)
        with pytest.raises(RedefinitionError, match=r"^cannot redefine 'web\.Handler\.handle' in "
                                                    r"place: its decorators changed"):
            redefineMethod(web.Handler, "handle", functools.lru_cache()(
                functools.lru_cache()(lambda self, x: x)))
    assert len(journal) == 0
    assert plain(2) == 2 and web.plain is plain
    assert web.Handler().handle(1) == ("routed", "/handle", ("old", 1))


def test_more_decorators_rebound_when_asked(web):
    plain = web.plain
    cached = functools.lru_cache(maxsize=None)(lambda x: -x)
    assert redefineFunction(web, "plain", cached, fallback="rebind") is cached
    assert web.plain(2) == -2 and plain(2) == 2  # the earlier reference keeps the old code
