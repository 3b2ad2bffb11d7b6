import inspect

import pytest

from pymoult import errors


def _error_classes():
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
            if issubclass(obj, Exception)]


def test_every_error_is_exported_and_rooted_at_pymoult_error():
    classes = _error_classes()
    assert set(errors.__all__) == {cls.__name__ for cls in classes}
    for cls in classes:
        assert issubclass(cls, errors.PymoultError)


@pytest.mark.parametrize("cls, builtin", [
    (errors.PymoultTypeError, TypeError),
    (errors.PymoultValueError, ValueError),
    (errors.ThreadStateError, RuntimeError),
    (errors.UpdateTimeoutError, TimeoutError),
    (errors.DeadlockDetectedError, RuntimeError),
    (errors.UnsupportedError, NotImplementedError),
])
def test_errors_mix_in_the_builtin_they_are(cls, builtin):
    with pytest.raises(builtin):
        raise cls("x")


def test_every_error_documents_when_it_is_raised():
    for cls in _error_classes():
        assert cls.__doc__ and len(cls.__doc__.split()) >= 8, cls
