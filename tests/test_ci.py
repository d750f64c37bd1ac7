"""CI cannot go green by skipping: with CI=true a missing shared folder (THINKTRAIN_SHARED) fails `.ci/run` and the
real_data / real_model tests; outside CI those tests skip with their reason."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_FILES = ("data/gsm8k/train.jsonl", "data/gsm8k/test.jsonl", "fixtures/smollm2.sh")

TINY_TESTS = """
import pytest

@pytest.mark.real_data
def test_needs_data():
    pass

@pytest.mark.real_model
def test_needs_model():
    pass

def test_plain():
    pass
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "THINKTRAIN_SHARED", "PYTEST_ADDOPTS")}
    return {**env, **extra}


def test_ci_run_stops_in_one_line_when_the_shared_folder_is_missing(tmp_path):
    bindir = tmp_path / "bin"  # a `make` that only says it ran: the suite itself never starts here
    bindir.mkdir()
    (bindir / "make").write_text("#!/bin/sh\necho make-ran \"$@\"\n")
    (bindir / "make").chmod(0o755)
    empty, complete = tmp_path / "empty", tmp_path / "complete"
    empty.mkdir()
    for f in SHARED_FILES:
        (complete / f).parent.mkdir(parents=True, exist_ok=True)
        (complete / f).write_text("")

    def ci_run(shared, **env):
        return subprocess.run(["bash", str(ROOT / ".ci/run")], capture_output=True, text=True, timeout=60,
                              env=_env(PATH=f"{bindir}:{os.environ['PATH']}", THINKTRAIN_SHARED=str(shared), **env))

    for ci in ("true", "1", "TRUE"):
        proc = ci_run(empty, CI=ci)
        assert proc.returncode == 2 and "make-ran" not in proc.stdout, (proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "shared folder" in lines[0] and f"{empty}/data/gsm8k/train.jsonl" in lines[0]
    (complete / "fixtures/smollm2.sh").unlink()  # one file short is just as much a failure
    proc = ci_run(complete, CI="true")
    assert proc.returncode == 2 and f"{complete}/fixtures/smollm2.sh" in proc.stderr and "train.jsonl" not in proc.stderr
    (complete / "fixtures/smollm2.sh").write_text("")
    for shared, env in ((complete, {"CI": "true"}), (empty, {}), (empty, {"CI": "false"})):
        proc = ci_run(shared, **env)
        assert proc.returncode == 0 and "make-ran test" in proc.stdout, (shared, env, proc.stderr)


def test_real_tests_fail_under_ci_and_skip_outside_it_without_the_shared_folder(tmp_path):
    """tests/conftest.py's rule, on three tiny tests (one real_data, one real_model, one plain)."""
    (tmp_path / "test_tiny.py").write_text(TINY_TESTS)
    empty = tmp_path / "shared"
    empty.mkdir()

    def pytest_run(*args, **env):
        cmd = [sys.executable, "-m", "pytest", str(tmp_path / "test_tiny.py"), "-p", "conftest", "-c",
               str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), "-q", "-rs", "-p", "no:cacheprovider", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=_env(PYTHONPATH=str(ROOT / "tests"), THINKTRAIN_SHARED=str(empty), **env))

    proc = pytest_run(CI="true")
    assert proc.returncode != 0, proc.stdout
    assert "CI: the real_data / real_model tests need the shared folder" in proc.stdout, proc.stdout
    for f in SHARED_FILES:
        assert str(empty / f) in proc.stdout
    assert "passed" not in proc.stdout and "skipped" not in proc.stdout
    # only the selected tests count: CI without the real tests does not need the folder
    proc = pytest_run("-m", "not real_data and not real_model", CI="true")
    assert proc.returncode == 0 and "1 passed, 2 deselected" in proc.stdout, proc.stdout
    for env in ({}, {"CI": "false"}):
        proc = pytest_run(**env)
        assert proc.returncode == 0 and "1 passed, 2 skipped" in proc.stdout, proc.stdout
        assert f"needs {empty / 'data/gsm8k/train.jsonl'}" in proc.stdout
        assert f"needs {empty / 'fixtures/smollm2.sh'}" in proc.stdout
