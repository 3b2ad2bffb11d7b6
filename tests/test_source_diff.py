"""The incremental comparison of source versions must give exactly what a full parse gives."""

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymoult.errors import PymoultTypeError
from pymoult.lowlevel import source_diff
from pymoult.lowlevel.source_diff import compare, parse_version, same_code, split_lines

pytestmark = pytest.mark.timeout(60)

BASE = '''"""doc"""
from __future__ import annotations
import os

X = dict(
a=1,
b=2,
c=3,
)

def f(x):
    s = """
def not_a_def():
    pass
"""
    return x

@decorator
def g():
    return 1

class C:
    y = 2

    def m(self):
        return (1 +
2)

total = 1 + \\
    2
label = "café"; size = 2
pair = (1,
2); third = 3
'''


def released(source):
    """A version whose statements' trees were let go, as in a recorded version."""
    version = parse_version(source, "m.py")
    version.release_trees()
    return version


def trees(version):
    return [ast.dump(s.node) for s in version.statements]


def shape(version):
    return [(s.kind, s.names, s.start, s.end, s.text) for s in version.statements]


def check(before_source, after_source):
    before = parse_version(before_source, "m.py")
    change = compare(before, after_source)
    assert shape(change.after) == shape(parse_version(after_source, "m.py"))
    return change


LINES = BASE.splitlines(keepends=True)
EDITS = ["", "\n", "b=20,\n", "def h():\n    return 2\n", "    return x + 1\n", "2)\n", "Y = 1\n",
         "# a comment\n", "@other\n", "class D:\n    pass\n", "    z = 3\n", "a=1,\n", ")\n"]


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, len(LINES)), length=st.integers(0, 3),
       insert=st.lists(st.sampled_from(EDITS), max_size=3))
def test_incremental_comparison_equals_a_full_parse(start, length, insert):
    new_lines = LINES[:start] + insert + LINES[start + length:]
    after = "".join(new_lines)
    try:
        expected = parse_version(after, "m.py")
    except SyntaxError:
        with pytest.raises(SyntaxError):
            compare(parse_version(BASE, "m.py"), after)
        return
    change = compare(parse_version(BASE, "m.py"), after)
    assert shape(change.after) == shape(expected)
    # the same from a recorded version, whose trees are parsed again from their text
    from_recorded = compare(released(BASE), after)
    assert shape(from_recorded.after) == shape(expected)
    assert trees(from_recorded.after) == trees(expected)
    assert [ast.dump(s.node) for s in from_recorded.old] == \
        [ast.dump(s.node) for s in change.old]
    # the statements outside the change are the old ones, unchanged
    old_texts = [s.text for s in change.before.statements]
    new_texts = [s.text for s in change.after.statements]
    kept = len(new_texts) - len(change.new)
    assert kept == len(old_texts) - len(change.old)


def test_a_one_line_change_parses_only_the_statement_around_it():
    change = check(BASE, BASE.replace("return 1", "return 10"))
    assert [s.names for s in change.old] == [("g",)] and [s.names for s in change.new] == [("g",)]
    assert change.delta == 0


def test_a_change_inside_a_literal_spanning_lines_at_column_zero_widens_to_the_statement():
    change = check(BASE, BASE.replace("b=2,", "b=20,"))
    assert [s.names for s in change.new] == [("X",)]


def test_an_insertion_shifts_the_statements_after_it():
    change = check(BASE, BASE.replace("import os\n", "import os\nimport sys\n"))
    assert change.delta == 1
    names = [s.names for s in change.new]
    assert ("sys",) in names


def test_a_future_import_moved_down_is_a_syntax_error():
    moved = BASE.replace("from __future__ import annotations\n", "") + \
        "from __future__ import annotations\n"
    with pytest.raises(SyntaxError):
        compare(parse_version(BASE), moved)


def test_a_syntax_error_reports_its_real_line():
    broken = BASE.replace("def g():", "def g(:")
    with pytest.raises(SyntaxError) as caught:
        compare(parse_version(BASE), broken)
    assert caught.value.lineno == broken.splitlines().index("def g(:") + 1


def test_bad_arguments():
    with pytest.raises(PymoultTypeError, match="expected a SourceVersion"):
        compare("x = 1\n", "x = 2\n")
    with pytest.raises(PymoultTypeError, match="source must be a str"):
        parse_version(b"x = 1\n")


def test_same_code_ignores_line_numbers_only():
    a = compile("def f(x):\n    return x + 1\n", "a", "exec").co_consts[0]
    b = compile("\n\n\ndef f(x):\n    return x + 1\n", "a", "exec").co_consts[0]
    c = compile("def f(x):\n    return x + 2\n", "a", "exec").co_consts[0]
    assert same_code(a, b) and not same_code(a, c)


def test_a_released_tree_is_parsed_again_exactly():
    fresh, recorded = parse_version(BASE, "m.py"), released(BASE)
    assert [s.names for s in fresh.statements][-4:] == [("label",), ("size",), ("pair",),
                                                        ("third",)]
    for old, new in zip(fresh.statements, recorded.statements):
        assert ast.dump(new.node, include_attributes=False) == ast.dump(old.node)
        assert (new.node.lineno, new.node.end_lineno) == (old.node.lineno, old.node.end_lineno)
    assert recorded.future_flags == fresh.future_flags != 0
    assert recorded.has_future


def test_a_future_import_moved_down_in_a_recorded_version_is_still_refused():
    moved = BASE.replace("from __future__ import annotations\n", "") + \
        "from __future__ import annotations\n"
    with pytest.raises(SyntaxError):
        compare(released(BASE), moved)


def test_a_statement_sharing_the_last_line_of_the_change_is_compared_once():
    # deleting the line above ``pair = (1,\n2); third = 3`` re-parses pair, and so third too
    change = check(BASE, BASE.replace('label = "café"; size = 2\n', ""))
    assert [s.names for s in change.after.statements].count(("third",)) == 1
    assert [s.names for s in change.old][-2:] == [("pair",), ("third",)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n\r\t\f\v\x1c\x85\u2028#é", max_size=60))
def test_lines_are_cut_where_the_tokenizer_cuts_them(text):
    assert split_lines(text) == source_diff._LINE.findall(text)
    assert "".join(split_lines(text)) == text


def naive_common(a, b, limit, from_end):
    n = 0
    while n < limit and (a[-1 - n] == b[-1 - n] if from_end else a[n] == b[n]):
        n += 1
    return n


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 700), st.integers(0, 700), st.integers(0, 700), st.integers(0, 3),
       st.integers(0, 3))
def test_common_prefix_and_suffix_of_long_line_lists(shared_start, shared_end, middle, a_extra,
                                                    b_extra):
    # lists longer than the slices compared at once, differing somewhere in the middle
    start = [f"s{i}" for i in range(shared_start)]
    end = [f"e{i}" for i in range(shared_end)]
    a = start + ["x"] * a_extra + [f"m{i}" for i in range(middle)] + end
    b = start + ["y"] * b_extra + [f"m{i}" for i in range(middle)] + end
    limit = min(len(a), len(b))
    prefix = source_diff._common_prefix(a, b, limit)
    assert prefix == naive_common(a, b, limit, from_end=False)
    assert source_diff._common_suffix(a, b, limit - prefix) == \
        naive_common(a, b, limit - prefix, from_end=True)


def test_a_change_in_a_long_module_is_found_between_the_shared_lines():
    source = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(2000))
    change = check(source, source.replace("return 1234\n", "return -1\n"))
    assert [s.names for s in change.old] == [s.names for s in change.new] == [("f1234",)]


def test_foreign_definitions_finds_code_from_elsewhere_wherever_it_sits():
    # functions and class attributes are sorted out at C speed: each place code from another
    # file can hide must still be found, in the module's order, and nothing else
    from pymoult.lowlevel.live_comparison import foreign_definitions
    import types as types_module

    module = types_module.ModuleType("foreign_mod")
    own = "<own>"

    def run(text, filename):
        exec(compile(text, filename, "exec"), module.__dict__)

    run("def local(x): return x\n"
        "class Plain:\n    a = 1\n    def m(self): return 1\n"
        "class Empty: pass\n"
        "class Wrapped:\n    def m(self): return 1\n", own)
    run("def elsewhere(x): return x\n"
        "def _fget(self): return 1\n"
        "def _static(): return 1\n"
        "def _method(self): return 2\n", "<other>")
    module.__dict__.update(
        Prop=type("Prop", (), {"__module__": "foreign_mod", "p": property(module._fget)}),
        Static=type("Static", (), {"__module__": "foreign_mod",
                                   "s": staticmethod(module._static)}),
        Method=type("Method", (), {"__module__": "foreign_mod", "m": module._method}),
        NotOurs=type("NotOurs", (), {"__module__": "elsewhere", "m": module._method}),
        Callable=type("Callable", (), {"__module__": "foreign_mod", "c": len}))
    module.Wrapped.m.__code__ = module._method.__code__  # changed in place by a script
    for name in ("Plain", "Empty", "Wrapped"):
        getattr(module, name).__module__ = "foreign_mod"
    assert foreign_definitions(module, {own}) == [
        "Wrapped", "elsewhere", "_fget", "_static", "_method", "Prop", "Static", "Method"]
    assert foreign_definitions(module, {own, "<other>"}) == []


def lines_compared(before_source, after_source):
    """What compare's shared lines must be: the new source's lines, and how many first and last
    lines it shares with the old one, counted line by line."""
    old, new = split_lines(before_source), split_lines(after_source)
    limit = min(len(old), len(new))
    first = naive_common(old, new, limit, from_end=False)
    return new, first, naive_common(old, new, limit - first, from_end=True)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="aab\n\n\r", max_size=40), st.text(alphabet="ab\n\r\f", max_size=12),
       st.integers(0, 40), st.integers(0, 40), st.integers(0, 3))
def test_lines_shared_found_from_the_texts_are_those_found_from_the_lines(text, insert, at,
                                                                         length, repeat):
    # the shared lines are found by comparing the texts: they must be exactly those found by
    # comparing the lines (an edit anywhere, a text without a final newline, repeated lines)
    before_source = text * repeat
    after_source = before_source[:at] + insert + before_source[at + length:]
    before = source_diff.SourceVersion(before_source, "m.py", [])
    for block in (source_diff._BLOCK, 4):  # also texts longer than the blocks compared at once
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(source_diff, "_BLOCK", block)
            shared = source_diff._shared_lines(before, after_source)
        if any(break_ in before_source + after_source for break_ in "\r\f"):
            assert shared is None  # cut line by line instead
            continue
        new_lines, first, last = shared
        assert (new_lines, first, last) == lines_compared(before_source, after_source)
        assert new_lines[:first] == before.lines[:first]


@pytest.mark.parametrize("edit", [
    lambda text: text.replace("return 3\n", "return -3\n"),  # near the start: the start counted
    lambda text: text.replace("return 1996\n", "return -1996\n"),  # near the end: the end
    lambda text: text[:-1],  # the last line left unterminated
    lambda text: text + text[:40],  # the shared end overlaps the shared start (repeated lines)
    lambda text: text.replace("return 1000\n", "return 1000\n\n\n"),  # lines added
    lambda text: text.replace("\n\ndef f1000", "def f1000"),  # lines removed
], ids=["start", "end", "unterminated", "overlapping", "added", "removed"])
def test_the_shared_lines_are_counted_from_either_end(edit):
    # the newlines of only one side of the change are counted, the other side's are what is
    # left of the version's lines: both ways, the same as comparing line by line
    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(2000))
    after = edit(text)
    assert after != text
    before = source_diff.SourceVersion(text, "m.py", [])
    assert source_diff._shared_lines(before, after) == lines_compared(text, after)
    unterminated = source_diff.SourceVersion(text[:-1], "m.py", [])
    assert source_diff._shared_lines(unterminated, after) == lines_compared(text[:-1], after)


def test_the_lines_of_a_large_module_after_a_change_are_its_own_and_share_the_rest():
    source = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(20000))
    before = parse_version(source, "m.py")
    for after_source in (source.replace("return 1234\n", "return -1\n"),
                         source.replace("return 0\n", "return 0\n\n\n"),
                         source + "x = 1", source[:-1], "# new\n" + source):
        change = compare(before, after_source)
        assert change.after.lines == split_lines(after_source)
        assert change.after.plain
