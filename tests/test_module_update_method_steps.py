"""What a ModuleUpdate says it will do to a changed class: the methods it updates, adds and
removes, each a step of its own after the class's."""

import textwrap

import pytest

from pymoult.highlevel.updates import ModuleUpdate

from modules import loaded

pytestmark = pytest.mark.timeout(30)

JOBS = """
class Job:
    LIMIT = 3

    def run(self):
        return 1

    def old(self):
        return 0

    @staticmethod
    def make():
        return Job()

def helper():
    return "h"

def process(n):
    return n
"""

JOBS_2 = """
class Job:
    LIMIT = 3

    def run(self):
        return 2

    @staticmethod
    def make():
        return Job()

    def bonus(self):
        return 5

def process(n):
    return n
"""


def line_of(source, text):
    return textwrap.dedent(source).splitlines().index(text) + 1


def test_a_changed_class_lists_its_updated_added_and_removed_methods(tmp_path):
    jobs = loaded(tmp_path, JOBS)
    name = jobs.__name__
    steps = [str(step) for step in ModuleUpdate(jobs, source=JOBS_2).steps]
    assert steps == [
        f"update class {name}.Job (line 2)",
        f"update method {name}.Job.run (line {line_of(JOBS_2, '    def run(self):')})",
        f"add method {name}.Job.bonus (line {line_of(JOBS_2, '    def bonus(self):')})",
        f"remove method {name}.Job.old",
        f"remove {name}.helper: no longer defined (was {name}.helper)",
    ]


def test_a_class_whose_methods_did_not_change_lists_none(tmp_path):
    jobs = loaded(tmp_path, JOBS)
    update = ModuleUpdate(jobs, source=JOBS.replace("LIMIT = 3", "LIMIT = 4"))
    assert [step.action for step in update.steps] == ["update class"]
    assert update.steps[0].parts == []


def test_a_property_counts_as_one_method(tmp_path):
    source = "class P:\n    @property\n    def x(self):\n        return 1\n"
    app = loaded(tmp_path, source)
    update = ModuleUpdate(app, source=source.replace("return 1", "return 2"))
    assert [str(s) for s in update.steps] == [f"update class {app.__name__}.P (line 1)",
                                             f"update method {app.__name__}.P.x (line 2)"]


def test_describe_shows_the_methods_under_their_class(tmp_path):
    jobs = loaded(tmp_path, JOBS)
    text = ModuleUpdate(jobs, source=JOBS_2).describe()
    assert f"  update method {jobs.__name__}.Job.run" in text and ": 5 steps" in text
