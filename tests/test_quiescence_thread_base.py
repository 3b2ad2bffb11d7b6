"""The base of a DSU_Thread's stack (the frame that calls its main and the frames below it,
Pymoult's and threading's): its code objects are read once, when the thread starts, and a
quiescence check stops its walk there, unless it looks for one of those codes; a subclass that
overrides ``run`` is still seen running; the base is let go when the thread ends."""

import sys
import threading

import pytest

from pymoult import _parking, _stacks
from pymoult.lowlevel import alterability as alt
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


class Nested:
    """``count`` threads (DSU threads, or of ``kind``) blocked ``depth`` frames deep in
    ``nested``."""

    def __init__(self, spawn, count=3, depth=4, kind=DSU_Thread):
        self.release = threading.Event()
        self.inside = threading.Barrier(count + 1, timeout=WAIT)
        self.threads = [spawn(kind(target=self.nested, args=(depth,))) for _ in range(count)]
        self.inside.wait()

    def nested(self, depth):
        if depth:
            return self.nested(depth - 1)
        self.inside.wait()
        self.release.wait(WAIT)
        return None


class Recorder:
    """A torn-call guard that finds nothing unsafe and counts the codes it is asked about."""

    def __init__(self):
        self.asked = {}

    def unsafe(self, code):
        self.asked[code] = self.asked.get(code, 0) + 1
        return False

    def __bool__(self):
        return True


def test_a_dsu_thread_has_a_base_while_it_runs_and_none_after(spawn):
    nested = Nested(spawn, count=1)
    thread = nested.threads[0]
    base = _parking.thread_bases()[thread.ident]
    assert base.frame.f_code is DSU_Thread._run_mains.__code__
    assert base.codes[:2] == (DSU_Thread._run_mains.__code__, DSU_Thread.run.__code__)
    assert base.codes[-1] is threading.Thread._bootstrap.__code__
    nested.release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert thread.ident not in _parking.thread_bases()


def test_the_threads_bases_share_one_tuple_of_codes(spawn):
    nested = Nested(spawn)
    bases = [_parking.thread_bases()[thread.ident] for thread in nested.threads]
    assert all(base.codes is bases[0].codes for base in bases)
    assert len({id(base.frame) for base in bases}) == len(bases)
    nested.release.set()


def test_a_walk_asks_about_the_base_codes_once_per_check_not_once_per_frame(spawn):
    nested = Nested(spawn, count=3, depth=4)
    guard = Recorder()
    assert _stacks.running_code((), _stacks.thread_stacks(nested.threads), guard) is None
    codes = _parking.thread_bases()[nested.threads[0].ident].codes
    assert {code: guard.asked.get(code) for code in codes} == dict.fromkeys(codes, 1)
    # the frames above the base are walked, in every thread: nested() five times in each
    assert guard.asked[Nested.nested.__code__] == 3 * 5
    nested.release.set()


def test_a_plain_thread_is_walked_to_its_first_frame(spawn):
    nested = Nested(spawn, count=2, kind=threading.Thread)
    assert all(thread.ident not in _parking.thread_bases() for thread in nested.threads)
    guard = Recorder()
    assert _stacks.running_code((), _stacks.thread_stacks(nested.threads), guard) is None
    assert guard.asked[threading.Thread._bootstrap.__code__] == 2
    nested.release.set()


def test_code_of_the_base_looked_for_is_found_running(spawn):
    nested = Nested(spawn)
    assert alt.checkQuiescenceOfFunction(DSU_Thread.run) is False
    assert alt.checkQuiescenceOfFunction(DSU_Thread._run_mains) is False
    assert alt.isFunctionInStack(threading.Thread._bootstrap_inner, nested.threads[0])
    # and the code above the base still is
    assert alt.checkQuiescenceOfFunction(Nested.nested) is False
    nested.release.set()
    for thread in nested.threads:
        thread.join(WAIT)
    assert alt.checkQuiescenceOfFunction(Nested.nested) is True


def test_a_subclass_overriding_run_is_seen_running_below_the_base(spawn):
    class Wrapped(DSU_Thread):
        def run(self):  # application code under DSU_Thread.run: part of the base's frames
            super().run()

    nested = Nested(spawn, count=2, kind=Wrapped)
    base = _parking.thread_bases()[nested.threads[0].ident]
    assert Wrapped.run.__code__ in base.codes
    assert alt.checkQuiescenceOfFunction(Wrapped.run) is False
    assert alt.checkQuiescenceOfFunction(Wrapped.run, nested.threads) is False
    nested.release.set()
    for thread in nested.threads:
        thread.join(WAIT)
    assert alt.checkQuiescenceOfFunction(Wrapped.run) is True


def test_an_unsafe_base_code_is_reported(spawn):
    nested = Nested(spawn, count=1)

    class Unsafe(Recorder):
        def unsafe(self, code):
            return code is DSU_Thread.run.__code__

    found = _stacks.running_code((), _stacks.thread_stacks(nested.threads), Unsafe())
    assert found is DSU_Thread.run.__code__
    nested.release.set()


def test_the_base_frame_is_the_one_running_main(spawn):
    seen = {}
    done = threading.Event()

    def main():
        frame = sys._getframe(1)  # the caller of main: DSU_Thread._run_mains
        seen["caller"] = frame
        seen["base"] = _parking.thread_bases()[threading.get_ident()].frame
        done.set()

    spawn(DSU_Thread(target=main))
    assert done.wait(WAIT)
    # main is the thread's main method, which calls the target: the base is the caller of that
    assert seen["base"] is seen["caller"].f_back


def test_a_chain_without_the_base_is_walked_to_its_end(spawn):
    """While a DSU thread runs its sleeping continuation, its current frames are the
    continuation greenlet's, which end without reaching the base; the main stack, under it, is
    walked too, down to the base."""
    inside, leave = threading.Event(), threading.Event()

    def in_continuation():
        inside.set()
        leave.wait(WAIT)

    def below_the_switch(thread_self):
        thread_self.switch()

    class Switching(DSU_Thread):
        def sleeping_continuation_function(self):
            in_continuation()

        def main(self):
            below_the_switch(self)

    thread = spawn(Switching())
    assert inside.wait(WAIT)
    assert thread.ident in _parking.thread_bases()
    for function, running in ((in_continuation, True), (below_the_switch, True),
                              (Nested.nested, False)):
        _stacks.forget_stacks()  # each check walks the stacks (no summary of a previous one)
        assert alt.checkQuiescenceOfFunction(function) is not running
    leave.set()


def test_an_error_of_the_guard_is_not_taken_for_the_end_of_a_stack(spawn):
    nested = Nested(spawn, count=1)

    class Broken(Recorder):
        def unsafe(self, code):
            if code is Nested.nested.__code__:
                raise AttributeError("the guard's own bug")
            return False

    with pytest.raises(AttributeError, match="the guard's own bug"):
        _stacks.running_code((), _stacks.thread_stacks(nested.threads), Broken())
    nested.release.set()
