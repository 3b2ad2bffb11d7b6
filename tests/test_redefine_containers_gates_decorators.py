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
import types

import pytest

from pymoult.errors import RedefinitionError
from pymoult.lowlevel.journal import Journal
from pymoult.lowlevel.relinking import redefineFunction, redefineMethod

pytestmark = pytest.mark.timeout(20)


def load(source, name):
    """A fresh module from source, as if imported."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


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
