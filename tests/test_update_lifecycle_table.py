"""The update lifecycle as one state machine: the transition table refuses illegal moves, every
ending (cancellations included) goes through one path that records it, and every postponement
goes through one requeue."""

import threading

import pytest

from pymoult.errors import LifecycleError, PymoultTypeError, UpdateAbortedError
from pymoult.highlevel import managers
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import TRANSITIONS, Update, UpdateState, isApplied

WAIT = 10.0


class Noop(Update):
    def apply(self):
        pass


class Never(Noop):
    """Requirements answer "no" until ``ready`` is set."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ready = threading.Event()

    def check_requirements(self):
        return "yes" if self.ready.is_set() else "no"


def test_illegal_transitions_are_refused_and_leave_the_state_alone():
    update = Noop(name="table")
    with pytest.raises(LifecycleError, match=r"^'table' cannot go from 'pending' to 'applied'$"):
        update.state = UpdateState.APPLIED
    assert update.state is UpdateState.PENDING
    update.state = UpdateState.WAITING
    update.state = UpdateState.APPLYING
    update.state = UpdateState.ROLLED_BACK
    with pytest.raises(LifecycleError, match="from 'rolled back' to 'pending'"):
        update.state = UpdateState.PENDING
    with pytest.raises(PymoultTypeError, match="an update's state is an UpdateState"):
        update.state = "applied"


def test_final_states_lead_nowhere_and_every_state_has_a_row():
    assert set(TRANSITIONS) == set(UpdateState)
    for state in UpdateState:
        if state is UpdateState.APPLIED:  # a RevertUpdate may undo it later
            assert TRANSITIONS[state] == {UpdateState.REVERTED,
                                          UpdateState.PARTIALLY_ROLLED_BACK}
        else:
            assert bool(TRANSITIONS[state]) is (not state.finished), state


def test_reaching_applied_records_the_name_for_is_applied():
    update = Noop(name="table applied name")
    update.state = UpdateState.WAITING
    update.state = UpdateState.APPLYING
    assert not isApplied("table applied name")
    update.state = UpdateState.APPLIED
    assert isApplied("table applied name")


def test_a_future_cancelled_while_queued_is_recorded_in_the_history():
    manager = Manager("table polling")
    update = Noop(name="cancelled early")
    future = manager.add_update(update)
    assert future.cancel()
    assert manager.apply_next_update() is update
    assert update.state is UpdateState.CANCELLED
    [record] = manager.history()
    assert (record.name, record.state) == ("cancelled early", "cancelled")


def test_stopping_records_every_queued_update_as_cancelled():
    manager = ThreadedManager("table stopped")  # never started: everything stays queued
    queued = Noop(name="queued")
    queued_future = manager.add_update(queued)
    postponed = Never(name="postponed")
    postponed_future = manager.add_update(postponed)
    postponed_future.set_running_or_notify_cancel()  # as if it had been postponed once
    assert manager.stop(WAIT)
    assert queued_future.cancelled()
    with pytest.raises(UpdateAbortedError, match="still postponed when the manager stopped"):
        postponed_future.result(0)
    assert {(r.name, r.state) for r in manager.history()} == {("queued", "cancelled"),
                                                              ("postponed", "cancelled")}


def test_every_postponement_goes_through_one_back_off(monkeypatch):
    monkeypatch.setattr(managers, "MAX_BACK_OFF", 0.2)
    manager = Manager("table back-off")
    update = Never(name="backing off", sleep_time=0.1)
    future = manager.add_update(update)
    delays = []
    for _ in range(4):
        manager.apply_next_update()  # requirements: "no" -> requeued
        [entry] = list(manager._queue)
        delays.append(round(entry.not_before - managers.time.monotonic(), 1))
        entry.not_before = 0.0  # due at once for the next call
    assert delays == [0.1, 0.2, 0.2, 0.2]  # doubled, then capped
    assert update.postponements == 4 and update.state is UpdateState.PENDING
    update.ready.set()
    while not future.done():
        manager.apply_next_update()
    assert future.result(0) is update and update.state is UpdateState.APPLIED
