"""Secrets stay secret: a Hub token given on the command line, in the environment or in the recipe's `env:` block
authenticates every Hub call, and lands in nothing written, printed or uploaded (recipe.yaml, model card,
training_args.bin in output_dir and in every checkpoint branch, the run header, logs, error messages)."""

from __future__ import annotations

import base64
import os
import pickle
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml

from thinktrain import hub
from thinktrain.configs import dataclass_types
from thinktrain.errors import RecipeError, is_secret, redact
from thinktrain.recipe import parse

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKEtokenMustNeverBeWritten9876543210"
CORE = "MustNeverBeWritten"  # also catches a truncated or partly masked token


def forms(secret: str) -> list[bytes]:
    """The byte forms a leak could take: UTF-8 (pickles store str as UTF-8), UTF-16, and base64 at each of the
    three alignments (the characters that depend only on the secret's bytes)."""
    raw = secret.encode()
    out = [raw, CORE.encode(), CORE.encode("utf-16-le")]
    out += [base64.b64encode(b"\0" * shift + raw)[4:-4] for shift in range(3)]
    return out


def leaks(blob: bytes, secret: str = TOKEN) -> bool:
    return any(form in blob for form in forms(secret))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """Restore os.environ and sys.argv after the test (parse writes HF_TOKEN; TrlParser writes the env: block), no
    saved token (`hf auth login`) and no HF_TOKEN to begin with."""
    environ, argv = dict(os.environ), list(sys.argv)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.argv[:] = argv


# --------------------------------------------------------------------------- fast: names, parse, messages


def test_secret_names():
    for name in ("hub_token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "openai_apikey", "aws_secret",
                 "db_password", "vllm_api_key"):
        assert is_secret(name), name
    for name in ("eos_token", "pad_token", "bos_token", "max_new_tokens", "tokenizer_name_or_path",
                 "include_num_input_tokens_seen", "average_tokens_across_devices", "HF_TOKEN_PATH", "key"):
        assert not is_secret(name), name


def test_hub_token_is_the_only_secret_recipe_key():
    """keep_secrets_out moves hub_token to the environment; a library upgrade that adds another secret field
    (an API key of a tracker or a vLLM server) fails here, to be kept out of training_args.bin as well."""
    import dataclasses

    found = {f.name for task in ("pretrain", "sft", "grpo") for cls in dataclass_types(task)
             for f in dataclasses.fields(cls) if is_secret(f.name)}
    assert found == {"hub_token"}


def test_parse_moves_hub_token_into_the_environment(clean_env):
    sys.argv[:] = ["thinktrain", "train", "recipes/tiny/sft.yaml", "--hub_token", TOKEN]
    recipe = parse([str(ROOT / "recipes/tiny/sft.yaml"), "--hub_token", TOKEN])
    assert recipe.training_args.hub_token is None and os.environ["HF_TOKEN"] == TOKEN
    assert recipe.secrets == ["hub_token"] and "hub_token" not in recipe.resolved()
    assert not leaks(pickle.dumps(recipe.training_args))  # what training_args.bin is
    assert not leaks(recipe.to_yaml().encode()) and TOKEN not in " ".join(sys.argv)  # trackers record argv
    text = recipe.to_yaml()
    assert text.startswith("# Secrets given to this run, not recorded here: hub_token.\n")
    assert "HF_TOKEN" in text and "hf auth login" in text
    assert yaml.safe_load(text)["task"] == "sft"


def test_hub_token_in_the_yaml_and_env_block_secrets_are_named_not_written(clean_env, tmp_path):
    path = tmp_path / "recipe.yaml"
    other = "wandb-FAKEkeyMustNeverBeWritten"
    path.write_text((ROOT / "recipes/tiny/sft.yaml").read_text() + f"hub_token: {TOKEN}\nenv:\n  WANDB_API_KEY: "
                    f"{other}\n  MY_SETTING: visible\n")
    recipe = parse([str(path)])
    assert recipe.training_args.hub_token is None and os.environ["HF_TOKEN"] == TOKEN
    assert os.environ["WANDB_API_KEY"] == other  # the env: block still reaches the environment
    assert recipe.secrets == ["hub_token", "env WANDB_API_KEY"]
    text = recipe.to_yaml()
    assert not leaks(text.encode()) and not leaks(text.encode(), other)
    assert "env" not in yaml.safe_load(text) and "MY_SETTING" not in text  # the env: block is never written
    assert "give env WANDB_API_KEY again" in text


def test_error_messages_never_quote_a_token(clean_env, run_cli, tmp_path):
    # a stray value after the token: argparse's "unexpected argument(s)" quotes the rest of the command line
    code, out, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", tmp_path, "--hub_token",
                             TOKEN, TOKEN + "x")
    assert code == 2 and "unexpected argument" in err, err
    assert not leaks((out + err).encode())
    assert redact(f"bad value {TOKEN}") == "bad value hf_***"  # a token in no variable: by its shape
    os.environ["MY_API_KEY"] = "sk-FAKEkey123456"
    assert redact("no such file or folder: hf_gsm8k sk-FAKEkey123456") == "no such file or folder: hf_gsm8k ***"


def test_preflight_refuses_when_pushes_would_send_no_token(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    from types import SimpleNamespace

    with pytest.raises(RecipeError, match="HF_HUB_DISABLE_IMPLICIT_TOKEN is set"):
        hub.preflight(SimpleNamespace(hub_model_id="me/x", output_dir="x", hub_token=None))


# --------------------------------------------------------------------------- slow: a real run, a recorded push


class HubRecorder:
    """Stands in for the huggingface_hub API boundary (HfApi methods): records every call, the token each would
    send, and a snapshot of every byte of every folder or file that would be uploaded; nothing is sent."""

    def __init__(self, monkeypatch):
        import huggingface_hub
        from huggingface_hub import RepoUrl
        from huggingface_hub.utils import build_hf_headers

        self.calls, self.uploaded, self.tokens_sent = [], {}, []
        rec = self

        def sent(api, token):  # what the request's Authorization header would carry
            rec.tokens_sent.append(build_hf_headers(token=token or api.token).get("authorization"))

        def whoami(api, token=None):
            rec.calls.append(("whoami",))
            sent(api, token)
            return {"name": "me", "orgs": [], "auth": {"accessToken": {"role": "write"}}}

        def create_repo(api, repo_id, token=None, **kw):
            rec.calls.append(("create_repo", repo_id))
            sent(api, token)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(api, repo_id, *, branch, token=None, **kw):
            rec.calls.append(("create_branch", repo_id, branch))
            sent(api, token)

        def upload_folder(api, *, repo_id, folder_path, revision=None, run_as_future=False, token=None, **kw):
            rec.calls.append(("upload_folder", repo_id, revision))
            sent(api, token)
            for p in sorted(Path(folder_path).rglob("*")):  # every file, ignore_patterns or not: a superset
                if p.is_file():
                    rec.uploaded[f"{revision or 'main'}:{p.relative_to(folder_path)}"] = p.read_bytes()
            done = Future()
            done.set_result(None)
            return done if run_as_future else None

        def unexpected(name):
            def record(api, *a, **kw):
                rec.calls.append((name,))
                rec.uploaded[f"{name}:{len(rec.calls)}"] = repr((a, kw)).encode()
                raise AssertionError(f"unexpected Hub call {name}")
            return record

        for name, fn in {"whoami": whoami, "create_repo": create_repo, "create_branch": create_branch,
                         "upload_folder": upload_folder, "create_commit": unexpected("create_commit"),
                         "upload_file": unexpected("upload_file")}.items():
            monkeypatch.setattr(huggingface_hub.HfApi, name, fn)


@pytest.mark.slow
@pytest.mark.parametrize("given", ["command line", "HF_TOKEN", "env block"])
def test_a_real_run_pushes_with_the_token_and_publishes_none_of_it(given, clean_env, monkeypatch, capfd, tmp_path):
    import torch

    from thinktrain.cli import main

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once, at import
    hub_api = HubRecorder(monkeypatch)
    recipe, extra = ROOT / "recipes/tiny/sft.yaml", []
    if given == "command line":
        extra = ["--hub_token", TOKEN]
    elif given == "HF_TOKEN":
        os.environ["HF_TOKEN"] = TOKEN
    else:
        recipe = tmp_path / "with-env.yaml"
        recipe.write_text(recipe_text := (ROOT / "recipes/tiny/sft.yaml").read_text() + f"env:\n  HF_TOKEN: {TOKEN}\n")
        assert TOKEN in recipe_text
    out = tmp_path / "x"
    code = main(["train", str(recipe), "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "steps",
                 "--save_steps", "1", "--logging_steps", "1", "--max_train_samples", "16",
                 "--per_device_train_batch_size", "4", "--push_to_hub", "true", "--hub_model_id", "me/x", *extra])
    printed = capfd.readouterr()
    assert code == 0, printed.err[-2000:]

    # the push happened, every call authenticated with the token
    assert [c for c in hub_api.calls if c[0] != "upload_folder"] == [
        ("whoami",), ("create_repo", "me/x"), ("create_branch", "me/x", "checkpoint-1"),
        ("create_branch", "me/x", "checkpoint-2")]
    assert [c[2] for c in hub_api.calls if c[0] == "upload_folder"] == ["checkpoint-1", "checkpoint-2", None]
    assert set(hub_api.tokens_sent) == {f"Bearer {TOKEN}"}
    for name in ("checkpoint-1:training_args.bin", "checkpoint-2:training_args.bin", "main:training_args.bin",
                 "main:recipe.yaml", "main:README.md", "main:model.safetensors"):
        assert name in hub_api.uploaded, name

    # ... and the token is in nothing uploaded, written or printed
    for name, blob in hub_api.uploaded.items():
        assert not leaks(blob), f"the token was uploaded in {name}"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 20
    for p in written:
        assert not leaks(p.read_bytes()), f"the token was written to {p}"
    assert not leaks((printed.out + printed.err).encode()), "the token was printed"
    assert "thinktrain sft:" in printed.out  # (the run header was captured)
    for p in out.rglob("training_args.bin"):
        assert torch.load(p, weights_only=False).hub_token is None

    # recipe.yaml says what was given (never its value) and stays rerunnable
    text = (out / "recipe.yaml").read_text()
    note = {"command line": "hub_token", "env block": "env HF_TOKEN"}.get(given)
    if note:
        assert text.startswith(f"# Secrets given to this run, not recorded here: {note}.\n"), text
        assert "HF_TOKEN" in text.splitlines()[1] and "hf auth login" in text.splitlines()[1]
    else:
        assert text.startswith("task: sft\n")  # an ambient HF_TOKEN was not given to the recipe
    assert "hub_token" not in yaml.safe_load(text) and "env" not in yaml.safe_load(text)
    assert "hub_token:" not in (out / "README.md").read_text()
    os.environ.pop("HF_TOKEN")
    with pytest.raises(RecipeError, match="needs a Hugging Face token.*HF_TOKEN"):
        parse([str(out / "recipe.yaml")])  # without a token the rerun's preflight says where to put one
    os.environ["HF_TOKEN"] = TOKEN
    again = parse([str(out / "recipe.yaml")])
    assert again.training_args.push_to_hub and again.training_args.hub_model_id == "me/x"
    assert again.training_args.max_steps == 2 and again.training_args.hub_token is None
