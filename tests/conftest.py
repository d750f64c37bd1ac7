import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THINKTRAIN_SHARED", ROOT.parent / "shared"))
GSM8K = SHARED / "data" / "gsm8k"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
# the recipe-key cache (schema.py) of this session's own, beside nothing of the user's (children inherit it)
os.environ.setdefault("THINKTRAIN_CACHE_DIR", tempfile.mkdtemp(prefix="thinktrain-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# What the real_data / real_model tests read from the shared folder.
NEEDS = {"real_data": [GSM8K / "train.jsonl", GSM8K / "test.jsonl"],
         "real_model": [SHARED / "fixtures" / "smollm2.sh"]}


def in_ci() -> bool:
    """CI=true (or 1/yes/on), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only the tests that would run count
def pytest_collection_modifyitems(config, items):
    # Outside CI a missing shared folder skips these tests; in CI it is a failure, never a green run of skips.
    missing = {mark: [str(p) for p in paths if not p.is_file()] for mark, paths in NEEDS.items()}
    needed = sorted({p for item in items for mark, paths in missing.items() if mark in item.keywords for p in paths})
    if needed and in_ci():
        pytest.exit(f"CI: the real_data / real_model tests need the shared folder (THINKTRAIN_SHARED={SHARED}); "
                    f"missing: {', '.join(needed)}", returncode=2)
    for item in items:
        absent = [p for mark, paths in missing.items() if mark in item.keywords for p in paths]
        if absent:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(absent)} (set THINKTRAIN_SHARED)"))


@pytest.fixture
def run_cli(capsys):
    """Run `thinktrain ...` in-process: returns (exit code, stdout, stderr)."""
    from thinktrain.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def build_micro_model(out: Path, *, qwen: bool = False) -> Path:
    """Save the `scratch:micro` preset, randomly initialised (seed 0), with thinktrain's byte-level tokenizer into
    `out`: a Llama (the tokenizer's ChatML template), or with `qwen` a Qwen2-architecture model whose tokenizer
    carries Qwen2.5's own chat template (tools and all, as TRL ships it). Stands in for a Hub checkpoint
    (the from_pretrained path), nothing downloaded. The one builder behind every micro-model fixture."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from thinktrain.models import PRESETS
    from thinktrain.tokenizer import build_tokenizer

    tok = build_tokenizer(None)
    fields = dict(vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **PRESETS["micro"])
    if qwen:
        from trl.chat_template_utils import qwen2_5_chat_template

        tok.chat_template = qwen2_5_chat_template
        config = Qwen2Config(max_position_embeddings=4096, **fields)
    else:
        config = LlamaConfig(**fields)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_micro_model(tmp_path_factory):
    """build_micro_model as a fixture: make_micro_model(name, qwen=False) saves a fresh micro model into a new
    folder of pytest's tmp (named after `name`) and returns it; for test modules that build their own copy."""
    return lambda name, **kwargs: build_micro_model(tmp_path_factory.mktemp(name), **kwargs)


@pytest.fixture(scope="session")
def tiny_model_dir(make_micro_model):
    """A saved tiny Llama + byte-level tokenizer: stands in for a Hub checkpoint (from_pretrained path)."""
    return make_micro_model("tiny-model")


@pytest.fixture(scope="session")
def gsm8k_sample(tmp_path_factory):
    """A small jsonl in GSM8K's shape (real rows when ../shared is there, else two written ones)."""
    out = tmp_path_factory.mktemp("gsm8k") / "sample.jsonl"
    src = GSM8K / "train.jsonl"
    if src.is_file():
        lines = src.read_text().splitlines()[:64]
    else:
        import json

        rows = [{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4=<<3*4=12>>12\n#### 12"},
                {"question": "Ann had 10 pens and gave away 4. How many are left?", "answer": "10-4=<<10-4=6>>6\n#### 6"}]
        lines = [json.dumps(r) for r in rows] * 32
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_qwen_dir(make_micro_model):
    """A saved tiny Qwen2-architecture model whose tokenizer carries Qwen2.5's own chat template (tools and all,
    as TRL ships it): stands in for Qwen/Qwen2.5-0.5B-Instruct in the tools recipe, nothing downloaded."""
    return make_micro_model("tiny-qwen", qwen=True)
