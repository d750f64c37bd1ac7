"""The bad-input corpus (tests/bad_inputs/cases.yaml): every malformed recipe, override, dataset file or command
stops with exit code 2 and one line naming the mistake and the fix, in seconds, before any model loads."""

import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())
SECONDS = 10  # per case, imports already done: the checks themselves take well under a second


@pytest.fixture(autouse=True)
def nothing_heavy(monkeypatch):
    """Run from tests/bad_inputs/ with every way of getting a model forbidden: one call fails the case."""
    import datasets
    import transformers
    import trl
    from trl import GRPOConfig, SFTConfig  # noqa: F401  (imported here, not inside the timed call)

    import thinktrain.evaluation
    import thinktrain.grpo
    import thinktrain.models
    import thinktrain.pretrain
    import thinktrain.sft

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded (or a trainer built) before the error")

    for module in (thinktrain.models, thinktrain.sft, thinktrain.grpo, thinktrain.pretrain, thinktrain.evaluation):
        monkeypatch.setattr(module, "load_model", forbidden)
    monkeypatch.setattr(thinktrain.evaluation, "evaluate_model", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", forbidden)
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", forbidden)  # any model class, however built
    monkeypatch.setattr(trl, "SFTTrainer", forbidden)
    monkeypatch.setattr(trl, "GRPOTrainer", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(HERE)
    # datasets draws progress bars on stderr the first time it reads a file; they are not messages
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if bars:
        datasets.enable_progress_bars()


def _files():
    return sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, run_cli, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    hidden = set(case.get("missing", []))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    before = _files()
    start = time.perf_counter()
    code, out, err = run_cli(*case["argv"])
    seconds = time.perf_counter() - start
    lines = err.rstrip("\n").split("\n")
    assert code == case["exit_code"] == 2, err
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be one line, got:\n{err}"
    assert lines[0].startswith("thinktrain: error: "), err
    for item in case["contains"]:
        assert item.lower() in lines[0].lower(), f"{item!r} not in: {lines[0]}"
    assert out == "", "nothing may run (no header, no output) before the error"
    assert seconds < SECONDS, f"took {seconds:.1f}s"
    assert _files() == before, "the case wrote files"


def test_manifest_is_consistent():
    assert len(CASES) >= 40
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for case in CASES:
        assert {"id", "argv", "exit_code", "contains"} <= set(case) <= {"id", "argv", "exit_code", "contains",
                                                                         "missing"}, case
        assert case["exit_code"] == 2 and case["contains"] and all(isinstance(a, str) for a in case["argv"]), case
    used = " ".join(a for c in CASES for a in c["argv"])
    recipes = [p.relative_to(HERE).as_posix() for p in (HERE / "recipes").glob("*.yaml")]
    assert not [r for r in recipes if r not in used], "recipes no case runs"
    referenced = used + " ".join((HERE / r).read_text() for r in recipes)
    data = [p.relative_to(HERE).as_posix() for p in (HERE / "data").iterdir()]
    assert not [d for d in data if d not in referenced], "data files no case reads"
