"""`dataset_mixture`: several datasets as one, written as open-r1 writes it, plus column mapping.

    dataset_mixture:
      datasets:
        - id: openai/gsm8k            # a Hub id, a local file or folder, or synthetic:NAME
          config: main
          split: train                # default train
          columns: [question, answer] # keep these (open-r1); or a mapping {problem: question} that also renames
          weight: 0.5                 # keep this fraction of its rows, drawn with `seed` (open-r1); (0, 1]
        - id: SynthLabsAI/Big-Math-RL-Verified
          columns: {problem: question, answer: answer}
      seed: 42                        # default 0
      test_split_size: 0.1            # a held-out `test` split of the mixture (else `train` only)

As open-r1's get_dataset: each dataset's split, its columns, a `weight` fraction of its rows (shuffled with `seed`),
all concatenated and shuffled with `seed`; test_split_size splits off `test`. The mixture then goes where
dataset_name's data would (splits `train` and, with test_split_size, `test`). `check` refuses a malformed mixture
before anything loads; `load` names an unknown column or datasets whose columns differ, in one line.
"""

from __future__ import annotations

from .errors import RecipeError, mapping_of, suggest

KEY = "dataset_mixture"
ENTRY_KEYS = ("id", "config", "split", "columns", "weight")
TOP_KEYS = ("datasets", "seed", "test_split_size")


def check(mixture) -> dict:
    """The mixture as given, checked and with its defaults (split train, seed 0); RecipeError on the first mistake."""
    mixture = mapping_of(mixture, KEY, "a mapping with `datasets:` (in the recipe, or JSON on the command line)")
    if not isinstance(mixture, dict):
        raise RecipeError(f"{KEY}: expected a mapping with `datasets:`, got a {type(mixture).__name__}")
    for key in mixture:
        if key not in TOP_KEYS:
            raise RecipeError(f"{KEY}: unknown key '{key}'{suggest(str(key), TOP_KEYS)}; keys: {', '.join(TOP_KEYS)}")
    datasets = mixture.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise RecipeError(f"{KEY}: `datasets` must list at least one dataset (id, and optionally config, split, "
                          f"columns, weight)")
    entries = []
    for i, entry in enumerate(datasets):
        where = f"{KEY}.datasets[{i}]"
        if not isinstance(entry, dict):
            raise RecipeError(f"{where}: expected a mapping with id (and config, split, columns, weight), got "
                              f"{entry!r}")
        for key in entry:
            if key not in ENTRY_KEYS:
                raise RecipeError(f"{where}: unknown key '{key}'{suggest(str(key), ENTRY_KEYS)}; keys: "
                                  f"{', '.join(ENTRY_KEYS)}")
        if not isinstance(entry.get("id"), str) or not entry["id"].strip():
            raise RecipeError(f"{where}: `id` is missing: a Hub dataset id, a local file or folder, or synthetic:NAME")
        columns = entry.get("columns")
        if columns is not None and not (
                (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns))
                or (isinstance(columns, dict) and columns and all(isinstance(k, str) and isinstance(v, str)
                                                                  for k, v in columns.items()))):
            raise RecipeError(f"{where} ({entry['id']}): `columns` is a list of column names to keep, or a mapping "
                              f"{{column: new name}}; got {columns!r}")
        weight = entry.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                                   or not 0 < weight <= 1):
            raise RecipeError(f"{where} ({entry['id']}): weight {weight!r} must be in (0, 1]: the fraction of its "
                              f"rows to keep")
        entries.append({"id": entry["id"], "config": entry.get("config"), "split": entry.get("split") or "train",
                        "columns": columns, "weight": weight})
    seed = mixture.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecipeError(f"{KEY}: seed {seed!r} must be a non-negative integer")
    test = mixture.get("test_split_size")
    if test is not None and (isinstance(test, bool) or not isinstance(test, (int, float)) or not 0 < test < 1):
        raise RecipeError(f"{KEY}: test_split_size {test!r} must be in (0, 1): the fraction held out as `test`")
    return {"datasets": entries, "seed": seed, "test_split_size": test}


def describe(mixture: dict) -> str:
    """For the run header: 'mixture of gsm8k, big-math'."""
    return f"{KEY} of {', '.join(e['id'] for e in mixture['datasets'])}"


def load(mixture: dict, load_raw, split_of):
    """The mixture as a DatasetDict (`train`, and `test` with test_split_size); each dataset read by data.py's
    `load_raw(id, config)` and `split_of(raw, split, id, key)` (passed in: data imports this module)."""
    from datasets import DatasetDict, concatenate_datasets

    seed, parts = mixture["seed"], []
    for i, entry in enumerate(mixture["datasets"]):
        where = f"{KEY}.datasets[{i}] ({entry['id']})"
        ds = split_of(load_raw(entry["id"], entry["config"]), entry["split"], entry["id"], f"{where} split")
        columns = entry["columns"]
        if columns:
            missing = [c for c in columns if c not in ds.column_names]
            if missing:
                raise RecipeError(f"{where}: no column '{missing[0]}'{suggest(missing[0], ds.column_names)}; it has: "
                                  f"{', '.join(ds.column_names)}")
            ds = ds.select_columns(list(columns))
            if isinstance(columns, dict):
                ds = ds.rename_columns({k: v for k, v in columns.items() if k != v})
        if entry["weight"] is not None:
            keep = int(len(ds) * entry["weight"])
            if keep == 0:
                raise RecipeError(f"{where}: weight {entry['weight']} keeps none of its {len(ds)} rows")
            ds = ds.shuffle(seed=seed).select(range(keep))
        parts.append((where, ds))
    first_where, first = parts[0]
    for where, ds in parts[1:]:
        if sorted(ds.column_names) != sorted(first.column_names):
            raise RecipeError(f"{KEY}: {where} has columns {', '.join(ds.column_names)} but {first_where} has "
                              f"{', '.join(first.column_names)}; keep or rename them alike with columns: "
                              f"{{old: new}}")
    try:
        mixed = concatenate_datasets([ds for _, ds in parts]).shuffle(seed=seed)
    except ValueError as e:  # same names, different types (an int answer beside a string one)
        raise RecipeError(f"{KEY}: the datasets' columns differ in type ({' '.join(str(e).split())[:200]}); "
                          f"cast them alike first") from None
    if mixture["test_split_size"] is not None:
        return mixed.train_test_split(test_size=mixture["test_split_size"], seed=seed)
    return DatasetDict(train=mixed)
