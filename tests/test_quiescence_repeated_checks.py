"""Repeated quiescence checks: a thread whose top frame has not changed since the previous check
is not walked again (its stack's summary is reused), yet every answer is the one a full walk
gives; a generator on top is walked each time; the frames kept between checks are let go."""

import gc
import sys
import threading
import weakref

import pytest
from polling import wait_until

from pymoult import _parking, _stacks
from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import Update, UpdateState
from pymoult.lowlevel import alterability as alt

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def stack_names(thread):
    """The function names on ``thread``'s stack now, innermost first."""
    frame = sys._current_frames().get(thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def blocked_in(thread, name):
    """True once ``thread`` waits (its top frame a wait's) with ``name`` on its stack."""
    return wait_until(lambda: stack_names(thread)[:1] == ["wait"]
                      and name in stack_names(thread))


class Stages:
    """A thread that runs ``first()`` until ``leave_first`` is set, then ``second()`` until
    ``leave_second`` is; ``first`` holds a ``Token`` in a local variable (``token``: a weak
    reference to it), which nothing else refers to."""

    class Token:
        pass

    def __init__(self, spawn):
        self.leave_first, self.leave_second = threading.Event(), threading.Event()
        made = threading.Event()

        def first():
            token = Stages.Token()
            self.token = weakref.ref(token)
            made.set()
            self.leave_first.wait(WAIT)

        def second():
            self.leave_second.wait(WAIT)

        def main():
            first()
            second()

        self.first, self.second = first, second
        self.thread = spawn(threading.Thread(target=main, name="stages"))
        assert made.wait(WAIT) and blocked_in(self.thread, "first")

    def to_second(self):
        self.leave_first.set()
        assert blocked_in(self.thread, "second")
        gc.collect()  # what keeps the token now is a strong reference, not a cycle

    def close(self):
        self.leave_first.set()
        self.leave_second.set()
        self.thread.join(WAIT)


@pytest.fixture
def stages(spawn):
    _stacks.forget_stacks()
    made = Stages(spawn)
    yield made
    made.close()
    _stacks.forget_stacks()


def test_an_idle_thread_is_summarised_at_its_second_check_and_answers_stay_exact(stages):
    def elsewhere():
        pass

    assert alt.checkQuiescenceOfFunction(stages.first) is False  # walked: seen once
    assert alt.checkQuiescenceOfFunction(stages.first) is False  # the same top: summarised
    tops = _stacks.thread_stacks(from_points=True)[stages.thread.ident]
    assert type(tops[0]) is _parking.StackSummary
    names, codes = tops[0].codes()
    assert stages.first.__code__ in codes and "main" in names  # the whole stack, not a prefix
    assert alt.checkQuiescenceOfFunctions([elsewhere, stages.second]) is True
    assert alt.checkQuiescenceOfFunction(stages.first) is False

    stages.to_second()  # a new top frame: its stack is read again
    assert alt.checkQuiescenceOfFunction(stages.first) is True
    assert alt.checkQuiescenceOfFunction(stages.second) is False
    assert alt.checkQuiescenceOfFunction(stages.second) is False  # from its new summary
    assert type(_stacks.thread_stacks(from_points=True)[stages.thread.ident][0]) is \
        _parking.StackSummary


def test_a_generator_on_top_is_walked_at_every_check(spawn):
    """A generator's frame may be resumed by another caller: the same top frame object, a
    different stack below it."""
    gate = threading.Lock()
    gate.acquire()
    done = threading.Event()

    def stepper():
        while not done.is_set():
            gate.acquire(timeout=WAIT)  # blocks here: the generator's frame is the top
            yield

    steps = stepper()

    def first_caller():
        next(steps)

    def second_caller():
        next(steps)

    def main():
        first_caller()
        second_caller()

    thread = spawn(threading.Thread(target=main))

    def on_top_under(caller):
        return stack_names(thread)[:2] == ["stepper", caller]

    assert wait_until(lambda: on_top_under("first_caller"))
    top = sys._current_frames()[thread.ident]
    for _ in range(3):
        assert alt.checkQuiescenceOfFunction(first_caller) is False
        assert alt.checkQuiescenceOfFunction(second_caller) is True
    gate.release()  # the generator takes the gate, yields; second_caller resumes it
    assert wait_until(lambda: on_top_under("second_caller"))
    assert sys._current_frames()[thread.ident] is top  # the same frame object on top
    assert alt.checkQuiescenceOfFunction(second_caller) is False
    assert alt.checkQuiescenceOfFunction(first_caller) is True
    done.set()
    gate.release()
    thread.join(WAIT)


def test_the_top_frames_of_a_check_are_kept_until_the_next_one(stages):
    # (what the two tests below rely on: without forgetting, the frames would stay)
    assert alt.checkQuiescenceOfFunction(stages.second) is True
    stages.to_second()  # first() has returned, but the frames the check kept refer to it
    assert stages.token() is not None
    assert alt.checkQuiescenceOfFunction(stages.first) is True  # this check's tops instead
    gc.collect()
    assert stages.token() is None


def test_a_wait_for_quiescence_lets_go_of_the_frames_once_it_is_over(stages):
    assert alt.waitQuiescenceOfFunction(stages.second, timeout=WAIT) is True
    stages.to_second()
    assert stages.token() is None


class CheckedUpdate(Update):
    """Alterable once ``second()`` is not running: checked as a snapshot of every stack."""

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def check_alterability(self):
        return alt.checkQuiescenceOfFunction(self.function)

    def apply(self):
        pass


def test_a_manager_lets_go_of_the_frames_once_an_update_is_over(stages):
    manager = Manager()
    future = manager.add_update(CheckedUpdate(stages.second, name="checked"))
    for _ in range(10):
        manager.apply_next_update()
        if future.done():
            break
    assert future.result(0).state is UpdateState.APPLIED
    stages.to_second()
    assert stages.token() is None
