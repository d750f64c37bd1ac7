"""The fast answers (schema.py): a recipe's commonest mistakes answered from the recipe's text and the cached recipe
keys, before TRL, transformers, peft or torch is imported, in the words the full parse would use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thinktrain import schema
from thinktrain.errors import TASKS, RecipeError

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("THINKTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def built() -> dict:
    from thinktrain.configs import dataclass_types
    from thinktrain.recipe import Parser

    return schema.build(Parser, dataclass_types)


def test_the_cached_schema_is_the_dataclasses_fields_for_every_task(cache):
    import dataclasses

    from thinktrain.configs import dataclass_types
    from thinktrain.recipe import Parser

    keys = built()
    schema.save(keys)
    assert schema.load() == json.loads(json.dumps(keys))  # what a later run reads is what was built
    for task in TASKS:
        parser = Parser(dataclass_types(task))
        assert set(keys[task]["keys"]) == {a.dest for a in parser._actions} - {"help", "config"}
        assert keys[task]["fields"] == sorted({f.name for c in dataclass_types(task) for f in dataclasses.fields(c)})
        flags = {s for a in parser._actions if a.dest not in ("help", "config") for s in a.option_strings}
        assert {s for specs in keys[task]["keys"].values() for spec in specs for s in spec["flags"]} == flags
    spec = keys["sft"]["keys"]["lr_scheduler_type"][0]
    assert spec["type"] == "choice" and "cosine" in spec["choices"]
    assert keys["sft"]["keys"]["learning_rate"][0]["type"] == "float"
    assert keys["sft"]["keys"]["bf16"][0]["type"] == "bool"


def test_another_version_of_a_library_reads_another_file(cache, monkeypatch, tmp_path):
    import importlib.machinery
    import importlib.util
    import os as os_

    schema.save(built())
    assert schema.load() is not None
    trl = importlib.util.find_spec("trl")
    record = next(Path(trl.origin).parent.parent.glob("trl-*.dist-info/RECORD"))
    stat = record.stat()
    os_.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # what pip install --upgrade trl does to it
    try:
        assert schema.load() is None  # the first run after the upgrade rebuilds it
        assert schema.precheck(["recipes/tiny/sft.yaml", "--lerning_rate", "1"]) is None  # no answer, not a wrong one
    finally:
        os_.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert schema.load() is not None
    moved = importlib.machinery.ModuleSpec("trl", None, origin=str(tmp_path / "elsewhere" / "trl" / "__init__.py"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: moved if name == "trl" else find_spec(name, *a))
    assert schema.load() is None  # another installation of it (another environment) is another file


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"sft": 1}', b"\xff\xfe"])
def test_a_corrupted_cache_is_ignored_without_a_word(cache, garbage, run_cli):
    path = schema.cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    assert schema.load() is None
    code, out, err = run_cli("train", str(ROOT / "recipes/tiny/sft.yaml"), "--lerning_rate", "1")
    assert (code, out) == (2, "")
    assert err == "thinktrain: error: unknown option 'lerning_rate' for task 'sft' (did you mean 'learning_rate'?)\n"
    assert schema.load() is not None  # the full parse wrote a good one


# Each family, in a fresh interpreter with a warm cache: the error, and nothing heavy imported when it came.
CHILD = """
import sys
from thinktrain.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "trl", "transformers", "peft", "datasets", "accelerate") if m in sys.modules)
print(f"exit {code}; imported {heavy}")
"""
FAMILIES = {
    "typo": (["recipes/good_sft.yaml", "--lerning_rate", "1"],
             "unknown option 'lerning_rate' for task 'sft' (did you mean 'learning_rate'?)"),
    "renamed key": (["recipes/renamed_max_seq_length.yaml"], "it was renamed: use max_length"),
    "yaml type": (["recipes/string_for_float.yaml"], "recipe key 'learning_rate': expected float"),
    "override type": (["recipes/good_sft.yaml", "--max_steps", "1.5"],
                      "argument --max_steps/--max-steps: invalid int value: '1.5'"),
    "choice": (["recipes/good_sft.yaml", "--lr_scheduler_type", "cosin"], "invalid choice: 'cosin'"),
    "bool": (["recipes/good_sft.yaml", "--packing", "maybe"], "Truthy value expected: got maybe"),
    "yaml syntax": (["recipes/yaml_syntax_error.yaml"], "YAML syntax error"),
    "missing task": (["recipes/task_missing.yaml"], "add task: grpo"),
    "missing recipe": (["recipes/nowhere.yaml"], "recipe file not found: recipes/nowhere.yaml"),
    "missing dataset file": (["recipes/good_sft.yaml", "--dataset_name", "data/nowhere.jsonl"],
                             "dataset_name: no such file or folder: data/nowhere.jsonl"),
}


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "THINKTRAIN_CACHE_DIR": str(tmp_path_factory.mktemp("c"))}
    first = subprocess.run([sys.executable, "-c", CHILD, "train", "recipes/good_sft.yaml", "--lerning_rate", "1"],
                           env=env, capture_output=True, text=True, cwd=BAD)
    assert "'torch'" in first.stdout and "'trl'" in first.stdout, first
    return env  # the first run, cold, took the full path and wrote the cache


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_answered_before_torch_is_imported(warm, family):
    argv, words = FAMILIES[family]
    proc = subprocess.run([sys.executable, "-c", CHILD, "train", *argv], env=warm, capture_output=True, text=True,
                          cwd=BAD)
    assert proc.stdout == "exit 2; imported []\n", proc.stdout + proc.stderr
    assert proc.stderr.startswith("thinktrain: error: ") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


TRAIN_CASES = [c for c in yaml.safe_load((BAD / "cases.yaml").read_text()) if c["argv"][0] == "train"]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c["id"] for c in TRAIN_CASES])
def test_the_fast_answer_is_the_full_parses_answer(case, monkeypatch):
    """Wherever the fast path answers a bad-input case, the full parse (recipe.parse) answers it in the same words:
    the fast path can say less, never something else."""
    from thinktrain.configs import dataclass_types
    from thinktrain.recipe import Parser, parse

    monkeypatch.chdir(BAD)
    keys = built()
    monkeypatch.setattr(schema, "load", lambda: keys)
    try:
        schema.precheck(case["argv"][1:])
    except RecipeError as fast:
        with pytest.raises(RecipeError) as full:
            parse(case["argv"][1:])
        assert str(full.value) == str(fast)
    del Parser, dataclass_types


def test_help_still_lists_the_keys(warm):
    """--help is no recipe key, but the fast path must let it through to the full parser, which prints the keys."""
    proc = subprocess.run([sys.executable, "-m", "thinktrain", "train", "recipes/good_sft.yaml", "--help"],
                          env=warm, capture_output=True, text=True, cwd=BAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--learning_rate" in proc.stdout and "error" not in proc.stderr
