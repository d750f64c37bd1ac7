"""A recipe's commonest mistakes answered before TRL, transformers, peft or torch is imported (~0.2 s, not ~5 s):
the recipe's text, and the recipe keys of each task as data.

The keys of each task (name, option strings, type, nargs, choices; the dataclass fields) are generated from the
dataclasses through the real parser the first time a recipe is parsed (recipe.parse) and cached as JSON in
~/.cache/thinktrain/ (THINKTRAIN_CACHE_DIR, else XDG_CACHE_HOME), under a name that hashes the installed trl,
transformers, peft and accelerate (where, and their files' times: any upgrade or reinstall) and the text of
thinktrain's config modules: any change reads another file, which the next full parse writes. A missing or unreadable cache is no answer: `precheck` then returns and the full
parse runs as it always did. The checks themselves (check_keys, coerce) are the full parse's own, run on actions
rebuilt from the cache, so both paths say the same words.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from .errors import DATA_SUFFIXES, TASKS, RecipeError, suggest
from .porting import REMOVED, RENAMED

PACKAGES = ("trl", "transformers", "peft", "accelerate")
SOURCES = ("configs.py", "schema.py", "tokenizer.py")  # thinktrain's modules that shape the keys (and this format)
PLAIN_TYPES = {"int": int, "float": float, "str": str}


# --------------------------------------------------------------------------- reading the YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice (PyYAML silently keeps the last one: a recipe with two
    learning_rate lines would train with whichever came last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise RecipeError(f"line {key_node.start_mark.line + 1}: key '{key}' is set twice (first on line "
                                  f"{seen[key]}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {path} (pass a YAML file, e.g. recipes/tiny/sft.yaml)")
    try:
        config = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # safe: never constructs Python objects
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        raise RecipeError(f"{path}: YAML tag not allowed ({e.problem}); recipes hold plain values only") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} YAML syntax error: {getattr(e, 'problem', e)}") from None
    if config is None:
        raise RecipeError(f"{path} is empty: a recipe needs at least `task:` and `model_name_or_path:`")
    if not isinstance(config, dict):
        raise RecipeError(f"{path} must be a YAML mapping of key: value, not a {type(config).__name__}")
    return config


def read(argv: list[str]) -> tuple[str | None, dict, dict, list[str], str]:
    """`RECIPE.yaml [--key value ...]` (or `--config RECIPE.yaml ...`) -> (path, config without env, env,
    overrides, task); the recipe file, its YAML, `env:` and `task` checked."""
    if argv and not argv[0].startswith("-"):
        argv = ["--config", *argv]
    path, overrides = None, list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe file")
        path, overrides = argv[i + 1], argv[:i] + argv[i + 2:]
    config = load_yaml(path) if path else {}
    env = config.pop("env", None) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"recipe key 'env': expected a mapping of VARIABLE: value, got a {type(env).__name__}")
    task = config.get("task", "sft")
    for i, tok in enumerate(overrides):
        if tok == "--task" and i + 1 < len(overrides):
            task = overrides[i + 1]
        elif tok.startswith("--task="):
            task = tok.split("=", 1)[1]
    if task not in TASKS:
        raise RecipeError(f"unknown task '{task}'{suggest(str(task), TASKS)}; choose one of: {', '.join(TASKS)}")
    return path, config, env, overrides, task


# --------------------------------------------------------------------------- the schema and its cache


def cache_file() -> Path:
    """Where the schema of the installed libraries lives: its name hashes, for each of PACKAGES, where it is
    installed and when its files were written (an upgrade, a downgrade or a reinstall rewrites them; found without
    importing it, ~1 ms where importlib.metadata takes ~40), and the text of thinktrain's SOURCES."""
    import importlib.util

    parts = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        files = [origin, *origin.parent.parent.glob(f"{package}-*.dist-info/RECORD")] if origin else []
        parts.append(f"{package} {origin} {[(f.name, *_stamp(f)) for f in files]}")
    here = Path(__file__).parent
    for name in SOURCES:
        parts.append(hashlib.sha256((here / name).read_bytes()).hexdigest())
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    root = os.environ.get("THINKTRAIN_CACHE_DIR") or \
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "thinktrain")
    return Path(root) / f"schema-{key}.json"


def _stamp(f: Path) -> tuple:
    try:
        st = f.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return ()


def _type_name(action) -> str:
    if action.type in (int, float, str):
        return action.type.__name__
    if getattr(action.type, "__name__", "") == "string_to_bool":
        return "bool"
    if action.choices and all(isinstance(c, str) for c in action.choices):
        return "choice"  # HfArgumentParser's enum/Literal lambdas: a string in, one of these strings out
    return "other"  # not checked here (the full parse does)


def build(make_parser, dataclass_types) -> dict:
    """task -> its keys as data, from `make_parser(dataclass_types(task))` (the real parser) and the dataclasses."""
    import dataclasses

    schema = {}
    for task in TASKS:
        parser = make_parser(dataclass_types(task))
        keys = {}
        for a in parser._actions:
            if a.dest in ("help", "config"):
                continue
            keys.setdefault(a.dest, []).append({
                "flags": list(a.option_strings), "type": _type_name(a), "nargs": a.nargs,
                "const": a.const if isinstance(a.const, (bool, int, float, str, type(None))) else None,
                "choices": list(a.choices) if a.choices and all(isinstance(c, str) for c in a.choices) else None,
                "store": type(a).__name__})
        schema[task] = {"keys": keys, "fields": sorted({f.name for c in dataclass_types(task)
                                                          for f in dataclasses.fields(c)})}
    return schema


def save(schema: dict) -> None:
    """Write the cache (atomically: a reader sees the old file or the new one); a read-only home is no error."""
    try:
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(schema))
        os.replace(tmp, path)
    except OSError:
        pass


def load() -> dict | None:
    """The cached schema of the installed versions, or None (missing, unreadable or malformed: never an error)."""
    try:
        schema = json.loads(cache_file().read_text())
        if isinstance(schema, dict) and all(isinstance(schema.get(t), dict) and "keys" in schema[t] for t in TASKS):
            return schema
    except (OSError, ValueError, TypeError):
        pass
    return None


class _Action:
    """What the checks read of an argparse action, rebuilt from the cache (types limited to int/float/str/bool)."""

    def __init__(self, spec: dict):
        self.option_strings, self.nargs, self.choices = spec["flags"], spec["nargs"], spec["choices"]
        self.type = PLAIN_TYPES.get(spec["type"]) or (string_to_bool if spec["type"] == "bool" else
                                                       str if spec["type"] == "choice" else None)


def string_to_bool(v):
    """transformers.hf_argparser.string_to_bool, word for word (its message is what argparse prints)."""
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {v} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive).")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise RecipeError(message)


def _override_parser(schema: dict, task: str) -> _Parser:
    """An argparse parser of the task's keys with the cached types and choices: argparse's own words for a bad
    --key value, as the full parser would say them."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    for dest, specs in schema[task]["keys"].items():
        for spec in specs:
            if not spec["flags"]:
                continue
            if spec["store"] in ("_StoreTrueAction", "_StoreFalseAction", "_StoreConstAction"):
                parser.add_argument(*spec["flags"], dest=dest, action="store_const", const=spec["const"])
                continue
            action = _Action(spec)
            parser.add_argument(*spec["flags"], dest=dest, type=action.type or str, nargs=spec["nargs"],
                                const=spec["const"] if spec["nargs"] == "?" else None,
                                choices=spec["choices"] if action.type is not None else None)
    return parser


# --------------------------------------------------------------------------- the checks


def check_keys(config: dict, overrides: list[str], schema: dict, task: str):
    """Every YAML key and every --option must be one of the task's recipe keys. All the keys to change are named in
    one error (a recipe ported from open-r1 or TRL 0.x would otherwise take one run per key): one line for a single
    key, else a summary line and then one key a line: each renamed key with its new name, each removed one with what
    to do instead, each unknown one with the closest valid key; a recipe without `task:` whose keys are another
    task's is told to name it. Then the given values the dataclasses would rewrite or choke on."""
    actions = set(schema[task]["keys"])
    options = {s.lstrip("-") for specs in schema[task]["keys"].values() for spec in specs for s in spec["flags"]}
    options |= {"h", "help"}  # not a key: the full parser prints every key's help for it
    fields = {t: set(schema[t]["fields"]) for t in TASKS}
    given = {str(key): "recipe key" for key in config}
    for tok in overrides:
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else None
        if tok.startswith("--") and not name:
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
        if name is not None:
            given.setdefault(name, "option")
        if name is None and tok.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", tok):
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
    wrong = {key: where for key, where in given.items() if key not in (actions if where == "recipe key" else options)}
    rows = {}
    if wrong and "task" not in given:  # read as sft; open-r1's GRPO recipes have no task: key
        misses = {t: [key for key in given if key not in fields[t]] for t in TASKS if t != task}
        other = min(misses, key=lambda t: len(misses[t]))
        if len(misses[other]) < len(wrong):
            mine = [key for key in given if key in fields[other] and key in wrong]
            rows["task"] = ("missing", f"add task: {other} (without it the recipe is read as {task}, and "
                                       f"{', '.join(mine[:3])}{', ...' if len(mine) > 3 else ''} are {other}'s keys)")
            task, actions, wrong = other, fields[other], {key: given[key] for key in misses[other]}
    if not rows and len(wrong) == 1:
        (key, where), = wrong.items()
        _, tail, _ = _key_advice(key, actions if where == "recipe key" else options, task, fields)
        raise RecipeError(f"unknown {where} '{key}' for task '{task}'{tail}")
    if rows and not wrong:
        raise RecipeError(f"task is not set: {rows['task'][1]}")
    if wrong:
        rows.update({key: _key_advice(key, actions, task, fields)[::2] for key in wrong})
        kinds = [kind for kind, _ in rows.values()]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("missing", "renamed", "removed", "unknown") if k in kinds)
        lines = [f"  {'--' if given.get(key) == 'option' else ''}{key}: {kind}, {row}"
                 for key, (kind, row) in rows.items()]
        raise RecipeError("\n".join([f"{len(rows)} recipe keys need changing for task '{task}' ({counts}):", *lines]))
    _check_given(config, overrides)


def _key_advice(key: str, known, task: str, fields: dict) -> tuple[str, str, str]:
    """For a key the task does not have: 'renamed' | 'removed' | 'unknown', the tail of its one-line message, and
    its row in a list of several."""
    new = RENAMED.get(key)
    if new and re.match(r"\w+", new).group() in known:
        return "renamed", f"; it was renamed: use {new}", f"use {new}"
    if key in REMOVED:
        return "removed", f"; it was removed: {REMOVED[key]}", REMOVED[key]
    if new:  # renamed to a key this task does not have (max_seq_length in a GRPO recipe)
        return "removed", f"; it was renamed to {new}, which task '{task}' does not have", f"delete it (renamed to " \
            f"{new}, which task '{task}' does not have)"
    others = [t for t in TASKS if t != task and key in fields[t]]
    if others:
        where = f"a key of task {' and '.join([', '.join(others[:-1]), others[-1]] if others[:-1] else others)}, " \
                f"not of {task}"
        return "unknown", f"; it is {where}", f"{where}; delete it"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return "unknown", f" (did you mean '{close[0]}'?)", f"did you mean '{close[0]}'?"
    return "unknown", "; no recipe key is close (docs/recipes.md)", "no recipe key is close (docs/recipes.md)"


def _check_given(config: dict, overrides: list[str]):
    """Values as given (the command line's over the YAML's), for what TrainingArguments.__post_init__ would turn
    into something else or choke on: eval_steps 0 silently becomes logging_steps; accelerator_config / fsdp_config
    name JSON files it opens without a check (a FileNotFoundError traceback)."""
    given = dict(config)
    for i, tok in enumerate(overrides):
        name, eq, value = tok[2:].partition("=")
        if tok.startswith("--") and not eq and i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
            given[name] = overrides[i + 1]
        elif tok.startswith("--") and eq:
            given[name] = value
    try:
        zero = float(given.get("eval_steps", 1)) == 0
    except (TypeError, ValueError):
        zero = False  # not a number: the parser says so
    if zero:
        raise RecipeError("eval_steps: 0 would quietly mean 'every logging_steps'; give the steps between "
                          "evaluations (a float < 1 is a ratio of the total), or set eval_strategy: no")
    for key in ("accelerator_config", "fsdp_config"):
        value = given.get(key)
        if isinstance(value, str) and value.strip() and not value.lstrip().startswith("{") \
                and not Path(value).expanduser().is_file():
            raise RecipeError(f"{key}: no such file: {value}; give a JSON file, or a mapping in the recipe")


def coerce(action, key: str, value):
    """Convert a YAML value with the same type function argparse uses for the CLI, so both agree."""
    if isinstance(value, dict) and (action.type in (int, float) or "bool" in getattr(action.type, "__name__", "")):
        raise RecipeError(f"recipe key '{key}': expected a single value, got a mapping")  # only dict fields take one
    if value is None or action.type is None or isinstance(value, dict):
        return value
    if action.nargs in ("+", "*"):
        return [_coerce_one(action, key, v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, list):
        if action.type is str:  # `str | list[str]` fields such as report_to take a list as it is
            return value
        raise RecipeError(f"recipe key '{key}': expected a single value, got a list")
    return _coerce_one(action, key, value)


def _coerce_one(action, key, value):
    type_name = getattr(action.type, "__name__", "value")
    if isinstance(value, bool) and action.type in (int, float):
        raise RecipeError(f"recipe key '{key}': expected {type_name}, got {value!r}")
    if isinstance(value, float) and action.type is int and not value.is_integer():
        raise RecipeError(f"recipe key '{key}': expected int, got {value!r}")
    try:
        out = action.type(str(int(value)) if isinstance(value, float) and action.type is int else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        expected = "true/false" if "bool" in type_name else type_name
        raise RecipeError(f"recipe key '{key}': expected {expected}, got {value!r}") from None
    if action.choices is not None and out not in action.choices:
        choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
        raise RecipeError(f"recipe key '{key}': {value!r} is not one of: {choices}")
    return out


def precheck(argv: list[str]) -> None:
    """The fast path (cli.train, before anything heavy is imported): raise the RecipeError the full parse would for
    a missing or malformed recipe file, an unknown, renamed or removed key, a missing task:, a value of the wrong
    type or outside its choices, a local model or dataset path that does not exist; return when none is found, or
    when there is no cached schema to tell."""
    if os.environ.get("THINKTRAIN_PRECHECK", "1") == "0":  # the escape hatch (and bench_errors' baseline)
        return
    path, config, _, overrides, task = read(list(argv))
    schema = load()
    if schema is None:
        return
    check_keys(config, overrides, schema, task)
    for key, value in config.items():
        for spec in schema[task]["keys"].get(str(key), [])[-1:]:  # the last, as the full parse takes
            coerce(_Action(spec), str(key), value)
    given = vars(_override_parser(schema, task).parse_known_args(overrides)[0])  # (leftovers: the full parse)
    for key in ("model_name_or_path", "dataset_name"):
        value = given.get(key) if given.get(key) is not None else config.get(key)
        if isinstance(value, str):
            check_local_source(key, value)


def check_local_source(key: str, value: str) -> bool:
    """A path that looks local must exist (refused in one line); True when `value` is a Hub id (the caller checks
    the Hub), False when there is nothing more to check."""
    if value.startswith(("synthetic:", "scratch:")) or Path(value).exists():
        return False
    looks_local = value.startswith((".", "/", "~")) or Path(value).suffix in DATA_SUFFIXES or value.count("/") > 1
    if looks_local or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
        raise RecipeError(f"{key}: no such file or folder: {value}")
    return True
