"""Each path of the update lifecycle, driven by both managers (polling and threaded)."""

import time

import pytest

from pymoult.errors import NotAlterableNow, UpdateAbortedError, UpdateStepError, UpdateTimeoutError
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import Update, UpdateState, isApplied
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


class Recording(Update):
    """Counts the steps it went through; ``answers`` feeds check_requirements."""

    def __init__(self, answers=("yes",), fail_in=None, **kwargs):
        super().__init__(**kwargs)
        self.answers, self.fail_in, self.calls = list(answers), fail_in, []

    def check_requirements(self):
        self.calls.append("requirements")
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def apply(self):
        self.calls.append("apply")

    def preresume_setup(self):
        self.calls.append("preresume_setup")
        if self.fail_in == "preresume_setup":
            raise OSError("preresume failed")

    def cleanup(self):
        self.calls.append("cleanup")
        if self.fail_in == "cleanup":
            raise OSError("cleanup failed")


@pytest.fixture(params=["polling", "threaded"])
def run(request):
    """``run(update)``: the update's future once done, from a manager of each kind."""
    if request.param == "threaded":
        manager = ThreadedManager().start()

        def run_threaded(update):
            future = manager.add_update(update)
            assert manager.wait_current_update(WAIT)
            return future

        yield run_threaded
        assert manager.stop(WAIT)
        return

    manager = Manager()

    def run_polling(update):
        future = manager.add_update(update)
        # bounded by time, not by a count of steps: on a loaded machine the threads the
        # update waits for may not be scheduled for a while
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if future.done():
                return future
            manager.apply_next_update()
        raise AssertionError(f"not done within {WAIT} s")

    yield run_polling


def test_requirements_yes_applies_every_step(run):
    update = Recording()
    assert run(update).result(0) is update and isApplied(update)
    assert update.calls == ["requirements", "apply", "preresume_setup", "cleanup"]


def test_requirements_no_postpones_with_back_off_then_applies(run):
    update = Recording(answers=("no", "no", "yes"), sleep_time=0.001)
    assert run(update).result(0) is update
    assert update.postponements == 2 and update.calls.count("requirements") == 3
    assert update.state is UpdateState.APPLIED


def test_requirements_never_aborts_without_applying(run):
    update = Recording(answers=("never",))
    with pytest.raises(UpdateAbortedError, match="answered 'never'"):
        run(update).result(0)
    assert update.state is UpdateState.ABORTED and "apply" not in update.calls


def test_an_unknown_requirements_answer_fails_the_update(run):
    update = Recording(answers=("maybe",))
    with pytest.raises(UpdateAbortedError, match="returned 'maybe'"):
        run(update).result(0)
    assert update.state is UpdateState.FAILED and "apply" not in update.calls


def test_alterability_reached_at_a_point(run, point_looper):
    update = Recording(threads=[point_looper()], max_tries=10**9, sleep_time=0.01)
    assert run(update).result(0) is update and update.pause is not None


def test_alterability_timed_out_releases_and_fails(run, spawn):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))  # never at a point
    update = Recording(threads=[thread], max_tries=3, sleep_time=0.001)
    # at points only: suspended anywhere, the waiting thread would be parked once its grace had
    # passed, which a loaded machine can stretch the three short tries past
    update.suspension = "points"
    with pytest.raises(UpdateTimeoutError, match="not alterable"):
        run(update).result(0)
    assert update.state is UpdateState.FAILED and "apply" not in update.calls
    assert thread.resume() is False  # its park request was withdrawn


@pytest.mark.parametrize("step", ["preresume_setup", "cleanup"])
def test_a_step_after_apply_that_raises_is_reported_and_the_update_stays(run, step):
    update = Recording(fail_in=step)
    with pytest.raises(UpdateStepError, match=f"is applied, but its {step} raised") as info:
        run(update).result(0)
    assert info.value.step == step and isinstance(info.value.__cause__, OSError)
    assert isApplied(update) and update.calls.count("apply") == 1
    assert run(Recording()).result(0).state is UpdateState.APPLIED  # the manager goes on


class FlakyWindow(Update):
    """An update whose apply finds it not alterable after all, ``refusals`` times."""

    def __init__(self, refusals, **kwargs):
        super().__init__(**kwargs)
        self.refusals, self.applied = refusals, 0

    def apply(self):
        if self.refusals:
            self.refusals -= 1
            raise NotAlterableNow("a changed function started running")
        self.applied += 1


def test_not_alterable_at_apply_waits_again_then_applies(run):
    update = FlakyWindow(2, sleep_time=0.001)
    assert run(update).result(0) is update
    assert update.applied == 1 and update.postponements == 2
    assert update.state is UpdateState.APPLIED and update.journal.state == "committed"


def test_not_alterable_at_apply_too_often_fails_with_that_error(run):
    update = FlakyWindow(10**6, sleep_time=0.001)
    update.max_postponements = 3
    with pytest.raises(NotAlterableNow, match="started running"):
        run(update).result(0)
    assert update.applied == 0 and update.postponements == 3
    assert update.state is UpdateState.ROLLED_BACK
