"""task: pretrain — the tokenizer it trains, the packed training run, its metrics, the checkpoint it leaves
(plain transformers loads it, SFT starts from it), determinism, and its one-line errors."""

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes/tiny/pretrain.yaml"
FINEWEB = ROOT / "recipes/pretrain_fineweb_edu.yaml"
# The tiny recipe, made quick: a 3,000-passage corpus, 128-token blocks of 8, no saving.
QUICK = ["--dataset_name", "synthetic:gsm8k?exposition=3000&worked=0&practice=0&test=0", "--max_eval_samples", "100",
         "--tokenizer_train_samples", "3000", "--max_length", "128", "--per_device_train_batch_size", "8",
         "--warmup_steps", "5"]


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def texts_jsonl(path: Path, n: int = 64) -> Path:
    from thinktrain.synthetic import generate

    path.write_text("".join(json.dumps(row) + "\n" for row in generate("exposition", n)))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One ~60-step run of the tiny recipe, shared by the tests that read its output."""
    import contextlib  # a module-scoped fixture can't use capsys: capture by hand
    import io

    from thinktrain.cli import main

    out = tmp_path_factory.mktemp("pretrain")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(TINY), *QUICK, "--max_steps", "60", "--logging_steps", "10", "--eval_steps", "30",
                     "--output_dir", str(out)])
    assert code == 0
    return out, stdout.getvalue()


# --------------------------------------------------------------------------- fast: parsing, presets, units


def test_recipes_parse_with_pretrain_dataclasses(tmp_path):
    from thinktrain.recipe import parse

    r = parse([str(TINY)])
    task, script, train, model = r.task, r.script_args, r.training_args, r.model_args
    assert task == "pretrain" and type(train).__name__ == "PretrainConfig" and type(script).__name__ == "PretrainArguments"
    assert train.packing and train.packing_strategy == "wrapped"  # pretraining defaults on top of SFTConfig
    assert script.vocab_size == 512 and model.model_name_or_path == "scratch:tiny"
    # the GPU recipe, offline: only the Hub dataset (checked for reachability), bf16 and the push (its preflight
    # needs the Hub) need overriding
    r = parse([str(FINEWEB), "--dataset_name", str(texts_jsonl(tmp_path / "t.jsonl")), "--bf16", "false",
               "--push_to_hub", "false", "--model_config_overrides", '{"num_hidden_layers": 2}'])
    script, train = r.script_args, r.training_args
    assert script.dataset_streaming and script.model_config_overrides == {"num_hidden_layers": 2}
    assert train.max_length == 1024 and script.peak_tflops == 989.0


def test_preset_sizes():
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from thinktrain.models import PRESETS

    def params(name, vocab=512):
        with torch.device("meta"):
            config = LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, **PRESETS[name])
            return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())

    assert params("micro") < 0.2e6
    assert 1e6 <= params("tiny") <= 3e6
    assert 17e6 <= params("small") <= 23e6
    assert 115e6 <= params("gpt2-124m", 50304) <= 130e6
    assert 0.4e9 <= params("d20", 65536) <= 0.6e9


def test_config_overrides_and_flops_per_token():
    from types import SimpleNamespace

    from thinktrain.models import load_model
    from thinktrain.pretrain import flops_per_token
    from thinktrain.tokenizer import build_tokenizer

    tok = build_tokenizer(None)
    model = load_model(SimpleNamespace(model_name_or_path="scratch:tiny"), SimpleNamespace(seed=0), tok,
                       {"num_hidden_layers": 2, "tie_word_embeddings": False})
    c = model.config
    assert c.num_hidden_layers == 2 and c.hidden_size == 256 and not c.tie_word_embeddings
    n = sum(p.numel() for p in model.parameters()) - len(tok) * 256  # the input embedding lookup is free
    assert flops_per_token(model, 128) == 6 * n + 12 * 2 * 256 * 128


# --------------------------------------------------------------------------- errors: one line, exit 2, no model


@pytest.fixture
def no_model_loads(monkeypatch):
    import thinktrain.pretrain

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(thinktrain.pretrain, "load_model", forbidden)


@pytest.mark.parametrize("extra,message", [
    (["--vocab_size", "100"], "vocab_size=100 is too small: a byte-level BPE needs at least 264"),
    (["--model_config_overrides", '{"num_hiden_layers": 2}'], "did you mean 'num_hidden_layers'"),
    (["--model_config_overrides", "layers=2"], "model_config_overrides: expected a JSON object"),
    (["--dataset_train_split", "worked"], "lacks column 'text' (pretraining reads raw text)"),
    (["--max_eval_samples", "30000"], "would hold out all 20000 training documents"),
    (["--dataset_streaming", "true", "--max_steps", "-1"], "dataset_streaming: true needs max_steps"),
    (["--tokenizer_name_or_path", "/no/such/tokenizer"], "tokenizer_name_or_path: no such file or folder"),
])
def test_pretrain_errors_are_one_line(run_cli, no_model_loads, extra, message):
    code, _, err = run_cli("train", TINY, *extra)
    assert code == 2, err
    assert err.startswith("thinktrain: error: ") and message in err and err.count("\n") == 1, err


def test_tokenizer_options_need_a_scratch_model(run_cli, no_model_loads, tiny_model_dir):
    code, _, err = run_cli("train", TINY, "--model_name_or_path", tiny_model_dir, "--tokenizer_name_or_path",
                           tiny_model_dir)
    assert code == 2 and "tokenizer_name_or_path is for a model built here" in err


# --------------------------------------------------------------------------- training (slow)


@pytest.mark.slow
def test_pretrain_lowers_loss_and_logs_speed_and_bpb(pretrained):
    out, stdout = pretrained
    assert "thinktrain pretrain: scratch:tiny" in stdout and "byte-level BPE trained on 2,900 documents" in stdout
    logs = history(out)
    losses = [h["loss"] for h in logs if "loss" in h]
    assert len(losses) == 6 and losses[-1] <= 0.8 * losses[0], losses
    train_logs = [h for h in logs if "loss" in h]
    assert all(h["tokens_per_second"] > 0 and 0 < h["mfu"] < 100 for h in train_logs)
    evals = [h for h in logs if "eval_loss" in h]
    assert len(evals) == 2 and evals[-1]["eval_bpb"] < evals[0]["eval_bpb"]
    # bpb = nats/token / (ln 2 x bytes/token); a byte-level BPE on English-like text has 1-4 bytes per token
    ratio = evals[-1]["eval_loss"] / (math.log(2) * evals[-1]["eval_bpb"])
    assert 1 < ratio < 4
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_tokens_per_second"] > 0 and results["train_mfu"] > 0


@pytest.mark.slow
def test_pretrained_tokenizer_round_trips_and_keeps_tags(pretrained):
    from transformers import AutoTokenizer

    out, _ = pretrained
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 512
    for text in ["Question: Mia has 12 apples and gives 5 to Sam.\nAnswer: 12 - 5 = 7. The answer is 7.",
                 "<think>\n3 * 4 = 12\n</think>\n<answer>\n12\n</answer>", "  ünïcödé 🎉 tabs\tand  spaces ", ""]:
        assert tok.decode(tok(text)["input_ids"]) == text
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert len(tok(tag)["input_ids"]) == 1 and tok.convert_ids_to_tokens(tok(tag)["input_ids"]) == [tag]
    assert len(tok("The answer is 425.")["input_ids"]) < len("The answer is 425.")  # it learned merges


@pytest.mark.slow
def test_pretrained_checkpoint_loads_and_feeds_sft(pretrained, tmp_path, run_cli):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = pretrained
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    ids = tok("Division undoes multiplication:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5

    sft = tmp_path / "sft"
    code, stdout, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--model_name_or_path", out,
                                "--max_steps", "2", "--output_dir", sft)
    assert code == 0, err
    assert f"thinktrain sft: {out}" in stdout and (sft / "model.safetensors").is_file()


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path, run_cli):
    def losses(name):
        out = tmp_path / name
        code, _, err = run_cli("train", TINY, *QUICK, "--max_steps", "8", "--logging_steps", "2",
                               "--eval_strategy", "no", "--output_dir", out)
        assert code == 0, err
        return [h["loss"] for h in history(out) if "loss" in h]

    first = losses("a")
    assert len(first) == 4 and first == losses("b")


def run_fineweb_on_cpu(run_cli, tmp_path, tiny_model_dir, *extra):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "train", FINEWEB, "--dataset_name", texts_jsonl(tmp_path / "corpus.jsonl", 200), "--model_name_or_path",
        "scratch:micro", "--max_steps", "3", "--max_length", "64", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--per_device_eval_batch_size", "4", "--max_eval_samples", "8",
        "--eval_steps", "3", "--logging_steps", "1", "--tokenizer_name_or_path", tiny_model_dir, "--bf16", "false",
        "--report_to", "none", "--push_to_hub", "false", "--save_strategy", "no", "--output_dir", out, *extra)
    assert code == 0, err
    assert f"tokenizer  from {tiny_model_dir}" in stdout
    logs = history(out)
    assert [h["step"] for h in logs if "loss" in h] == [1, 2, 3] and any("eval_bpb" in h for h in logs)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    return stdout


@pytest.mark.slow
def test_fineweb_recipe_runs_on_cpu_with_local_text(tmp_path, run_cli, tiny_model_dir):
    stdout = run_fineweb_on_cpu(run_cli, tmp_path, tiny_model_dir, "--dataset_streaming", "false")
    assert "(192 train / 8 eval)" in stdout  # 200 documents, the first 8 held out for evaluation


@pytest.mark.slow
def test_fineweb_recipe_streams_local_text(tmp_path, run_cli, tiny_model_dir):
    assert "(streaming / 8 eval)" in run_fineweb_on_cpu(run_cli, tmp_path, tiny_model_dir)
