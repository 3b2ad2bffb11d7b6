"""No caller sees half a ModuleUpdate: a frame that calls two functions changing together
(``decode(encode(x))``) holds the update back while it runs, in every mode; a thread parked at
one of its own update points, or waiting for the update in Pymoult, does not."""

import threading

import pytest

from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import ModuleUpdate, UpdateState
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)

CODEC = """
def encode(x):
    return x + 1

def decode(y):
    return y - 1
"""
CODEC_V2 = """
def encode(x):
    return x * 3 + 2

def decode(y):
    return (y - 2) // 3
"""


class Caller:
    """A thread running ``decode(relay(encode(x)))``, stopped inside ``relay`` (between the two
    calls) until released; ``at_point``: it parks at an update point there instead."""

    def __init__(self, codec, thread_class=threading.Thread, at_point=False):
        self.between, self.release = threading.Event(), threading.Event()
        self.results = []
        self.released = False  # a plain flag: the busy loop below calls nothing but the point

        def relay(value):
            self.between.set()
            if at_point:
                while not self.released:  # busy: always at or near its point
                    staticUpdatePoint()
            else:
                self.release.wait(WAIT)
            return value

        def round_trip(x):
            return codec.decode(relay(codec.encode(x)))

        self.thread = thread_class(target=lambda: self.results.append(round_trip(7)),
                                   name="caller", daemon=True)
        self.thread.start()
        assert self.between.wait(WAIT)

    def finish(self):
        self.released = True
        self.release.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        return self.results


def test_quiescence_waits_for_a_caller_between_two_changed_functions(tmp_path):
    codec = loaded(tmp_path, CODEC)
    caller = Caller(codec)
    update = ModuleUpdate(codec, source=CODEC_V2)
    try:
        assert not update.check_alterability()  # encode and decode are quiescent, the caller not
        why = update.why_not_alterable()
        assert "round_trip() (test_module_update_torn_calls.py) is running and calls decode, " \
               "encode, which change together" in why
    finally:
        assert caller.finish() == [7]  # the round trip stayed on one version
    assert update.check_alterability()
    Manager().apply_update(update)
    assert codec.decode(codec.encode(7)) == 7 and codec.encode(1) == 5


@pytest.mark.parametrize("thread_class", [threading.Thread, DSU_Thread])
def test_a_thread_suspended_anywhere_between_the_two_calls_holds_the_update(tmp_path,
                                                                          thread_class):
    codec = loaded(tmp_path, CODEC)
    caller = Caller(codec, thread_class)
    update = ModuleUpdate(codec, source=CODEC_V2, threads=[caller.thread], timeout=0.3)
    try:
        assert not update.wait_alterability()  # suspended inside relay: never safe there
        assert "round_trip()" in update.why_not_alterable()
    finally:
        update.clean_failed_alterability()
        assert caller.finish() == [7]
    update = ModuleUpdate(codec, source=CODEC_V2, threads=[caller.thread])
    Manager().apply_update(update)  # the thread has ended: nothing holds the update
    assert codec.encode(1) == 5


def test_a_thread_parked_at_its_own_point_between_the_calls_lets_the_update_apply(tmp_path,
                                                                                 manager):
    codec = loaded(tmp_path, CODEC)
    caller = Caller(codec, DSU_Thread, at_point=True)
    update = ModuleUpdate(codec, source=CODEC_V2, threads=[caller.thread])
    update.suspension = "points"  # it parks at its point, never elsewhere
    try:
        manager.apply_update(update, timeout=WAIT)  # where its author said updates may come
        assert update.state is UpdateState.APPLIED
    finally:
        results = caller.finish()
    assert results != [7]  # old encode, new decode: the point's author asked for it


def test_the_thread_waiting_for_the_update_does_not_hold_it_back(tmp_path):
    codec = loaded(tmp_path, CODEC)
    assert codec.decode(codec.encode(1)) == 1  # this frame calls both: it waits in Pymoult
    Manager().apply_update(ModuleUpdate(codec, source=CODEC_V2))
    assert codec.decode(codec.encode(1)) == 1 and codec.encode(1) == 5
