"""`thinktrain merge ADAPTER_DIR OUT_DIR`: a LoRA adapter folded into its base model -> a plain full model.

The adapter folder is what a `use_peft: true` run leaves in output_dir (adapter_config.json naming the base
model, adapter weights, tokenizer, recipe.yaml). The base is loaded in full precision (a 4-bit/8-bit training
base is never merged into: rounding would be baked in), the adapter's deltas are added to its weights, and the
result saves like any checkpoint: `AutoModelForCausalLM.from_pretrained(OUT_DIR)` needs no peft.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from .arguments import ArgumentParser
from .errors import RecipeError


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser(prog="thinktrain merge", description=__doc__.split("\n")[0])
    p.add_argument("adapter_dir", help="folder with adapter_config.json (a use_peft run's output_dir or checkpoint)")
    p.add_argument("out_dir", help="where the merged model + tokenizer go")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the merged weights (auto: the base model's)")
    p.add_argument("--base", default=None, help="base model to merge into (default: the one the adapter names)")
    return p.parse_args(argv)


def check(a: argparse.Namespace) -> str:
    """The base model's name or path; one-line RecipeError for every mistake, before anything loads."""
    adapter = Path(a.adapter_dir)
    if not adapter.is_dir():
        raise RecipeError(f"merge: adapter folder '{adapter}' does not exist")
    config = adapter / "adapter_config.json"
    if not config.is_file():
        hint = " (it holds a full model: nothing to merge)" if (adapter / "config.json").is_file() else ""
        raise RecipeError(f"merge: '{adapter}' has no adapter_config.json{hint}; pass the output_dir of a use_peft run")
    try:
        base = a.base or json.loads(config.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as e:
        raise RecipeError(f"merge: {config} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not base:
        raise RecipeError(f"merge: {config} names no base_model_name_or_path; pass --base MODEL")
    out = Path(a.out_dir)
    if out.resolve() == adapter.resolve():
        raise RecipeError("merge: OUT_DIR must differ from ADAPTER_DIR (the adapter would be overwritten)")
    if out.is_dir() and any(out.iterdir()):
        raise RecipeError(f"merge: '{out}' exists and is not empty; choose a new OUT_DIR")
    return base


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    base = check(a)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = "auto" if a.dtype == "auto" else getattr(torch, a.dtype)
    print(f"merging {a.adapter_dir} into {base}", flush=True)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, a.adapter_dir).merge_and_unload()
    tokenizer_src = a.adapter_dir if (Path(a.adapter_dir) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    model.save_pretrained(a.out_dir)
    tokenizer.save_pretrained(a.out_dir)
    if (Path(a.adapter_dir) / "recipe.yaml").is_file():  # keep the record of how the adapter was trained
        shutil.copy(Path(a.adapter_dir) / "recipe.yaml", Path(a.out_dir) / "recipe.yaml")
    print(f"saved merged model + tokenizer to {a.out_dir}", flush=True)
    return 0
