"""Tokens: at least 16 bytes once surrounding whitespace is stripped (from an argument, a file or
``$PYMOULT_TOKEN``, on either side), refused otherwise with one sentence saying how to make one;
``pymoult token`` makes one; the application's environment loses ``$PYMOULT_TOKEN`` once read."""

import os

import pytest

from app_process import App, command_env, pymoult
from listening import WAIT
from pymoult import client, protocol
from pymoult.errors import PymoultValueError
from pymoult.highlevel.listener import Listener, PipeListener

pytestmark = pytest.mark.timeout(60)
STRONG = "a-token-strong-enough-for-tests"
ADVICE = r"under the 16 required: make a strong one with 'pymoult token'"


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)
    monkeypatch.delenv("PYMOULT_ADDRESS", raising=False)


def token_file(tmp_path, content):
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("content, size", [("x", 1), ("  fifteen-bytes!!\n", 15),
                                           ("\u00e9" * 7 + "\n", 14)])
def test_a_weak_token_file_is_refused(tmp_path, content, size):
    path = token_file(tmp_path, content)
    with pytest.raises(PymoultValueError, match=rf"^the token from token file '.*' is {size} "
                                                rf"bytes? long, {ADVICE}"):
        Listener(token_file=path)
    with pytest.raises(PymoultValueError, match=ADVICE):
        protocol.read_token_file(path)


def test_sixteen_bytes_after_stripping_are_enough(tmp_path):
    path = token_file(tmp_path, "\n  sixteen-bytes!!!  \n")
    assert protocol.read_token_file(path) == "sixteen-bytes!!!"
    with Listener(token_file=path) as listener:
        assert client.status(listener.address, token=" sixteen-bytes!!! ")["ok"]


@pytest.mark.parametrize("value, size", [(" ", 0), ("  short\t", 5), ("\n" * 20, 0)])
def test_a_weak_token_in_the_environment_is_refused(monkeypatch, value, size):
    monkeypatch.setenv("PYMOULT_TOKEN", value)
    with pytest.raises(PymoultValueError, match=rf"^the token from PYMOULT_TOKEN is {size} bytes "
                                                rf"long, {ADVICE}"):
        Listener()
    monkeypatch.setenv("PYMOULT_TOKEN", value)
    with pytest.raises(PymoultValueError, match=ADVICE):
        client.status("unix:/nonexistent/socket")  # before any connection


def test_a_weak_token_argument_is_refused(tmp_path):
    for make in (lambda: Listener(token="short"),
                 lambda: PipeListener(str(tmp_path / "pipe"), token="short")):
        with pytest.raises(PymoultValueError, match=r"^the token from token= is 5 bytes long"):
            make()


def test_the_listener_takes_the_token_out_of_the_environment(monkeypatch):
    monkeypatch.setenv("PYMOULT_TOKEN", f"  {STRONG}\n")
    with Listener() as listener:
        assert "PYMOULT_TOKEN" not in os.environ
        assert listener.requires_token
        assert client.status(listener.address, token=STRONG)["ok"]


def test_pymoult_token_prints_a_fresh_strong_token(tmp_path):
    made = [pymoult("token") for _ in range(2)]
    assert all(m.returncode == 0 and m.stderr == "" for m in made)
    first, second = (m.stdout.strip() for m in made)
    assert first != second and len(first) >= 40 and made[0].stdout == first + "\n"
    assert protocol.read_token_file(token_file(tmp_path, made[0].stdout)) == first


def test_pymoult_push_with_a_weak_token_says_how_to_make_one(tmp_path):
    refused = pymoult("status", "--to", "tcp:127.0.0.1:1", env=command_env(PYMOULT_TOKEN=" x "))
    assert refused.returncode == 2
    assert refused.stderr == ("pymoult status: the token from PYMOULT_TOKEN is 1 byte long, "
                              "under the 16 required: make a strong one with 'pymoult token' "
                              "(e.g. pymoult token > FILE; chmod 600 FILE)\n")
    weak = token_file(tmp_path, "weak")
    refused = pymoult("push", "-", "--to", "tcp:127.0.0.1:1", "--token-file", weak, stdin="1\n")
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert "is 4 bytes long" in refused.stderr and "Traceback" not in refused.stderr


def test_pymoult_run_with_a_weak_token_file_does_not_start(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("print('started')\n")
    ran = pymoult("run", "--token-file", token_file(tmp_path, "weak"), str(app))
    assert ran.returncode == 1 and "started" not in ran.stdout
    [line] = ran.stderr.splitlines()
    assert line.startswith("pymoult run: the token from token file") and "pymoult token" in line


def test_the_application_and_its_children_do_not_inherit_the_token(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("import os, subprocess, sys\n"
                   "print('app sees', os.environ.get('PYMOULT_TOKEN'), flush=True)\n"
                   "subprocess.run([sys.executable, '-c', 'import os; "
                   "print(\"child sees\", os.environ.get(\"PYMOULT_TOKEN\"))'])\n")
    run = App(app, env=command_env(PYMOULT_TOKEN=STRONG))
    try:
        assert run.ended(WAIT) == 0
        assert run.stdout.text().splitlines() == ["app sees None", "child sees None"]
    finally:
        run.close()
