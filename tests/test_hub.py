"""Sharing on the Hub, short of the network: the preflight's errors, the model card, and the calls made at the
huggingface_hub API boundary (checkpoint revisions in the background, the final push with our card)."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from thinktrain import hub
from thinktrain.errors import RecipeError
from thinktrain.recipe import parse

ROOT = Path(__file__).resolve().parents[1]


def whoami(role="write", orgs=(), fine_grained=None, name="me"):
    token = {"role": role}
    if fine_grained is not None:
        token["fineGrained"] = fine_grained
    return {"name": name, "orgs": [{"name": o, "roleInOrg": r} for o, r in orgs], "auth": {"accessToken": token}}


class FakeApi:
    def __init__(self, me=None, error=None, token="hf_fake"):
        self.me, self.error, self.token = me or whoami(), error, token

    def whoami(self, token=None):
        if self.error:
            raise self.error
        return self.me


def args(**kw):
    base = dict(hub_model_id=None, output_dir="runs/my-model", hub_token=None)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once, at import


def test_preflight_resolves_the_namespace(online):
    assert hub.preflight(args(), api=FakeApi()) == "me/my-model"  # output_dir's name, as the Trainer would
    assert hub.preflight(args(hub_model_id="me/x"), api=FakeApi()) == "me/x"
    assert hub.preflight(args(hub_model_id="lab/x"), api=FakeApi(whoami(orgs=[("lab", "write")]))) == "lab/x"
    scoped = {"scoped": [{"entity": {"type": "org", "name": "lab"}, "permissions": ["repo.content.read",
                                                                                    "repo.write"]}]}
    assert hub.preflight(args(hub_model_id="lab/x"),
                         api=FakeApi(whoami("fineGrained", [("lab", "contributor")], scoped))) == "lab/x"


@pytest.mark.parametrize("kw,api,words", [
    (dict(hub_model_id="my model!"), FakeApi(), ["hub_model_id 'my model!' is not a valid repo id"]),
    (dict(hub_model_id="a/b/c"), FakeApi(), ["is not a valid repo id"]),
    ({}, FakeApi(token=None), ["needs a Hugging Face token", "hf auth login", "HF_TOKEN"]),
    ({}, FakeApi(error=ConnectionError("Max retries exceeded with url: /api/whoami-v2")),
     ["the Hub is unreachable", "Max retries exceeded", "--push_to_hub false"]),
    ({}, FakeApi(error=RuntimeError("401 Client Error: Unauthorized")), ["token is invalid or expired"]),
    ({}, FakeApi(whoami("read")), ["the token of 'me' cannot write to 'me'", "write token"]),
    (dict(hub_model_id="lab/x"), FakeApi(), ["cannot write to 'lab'"]),  # not a member
    (dict(hub_model_id="lab/x"), FakeApi(whoami(orgs=[("lab", "read")])), ["cannot write to 'lab'"]),
    (dict(hub_model_id="lab/x"), FakeApi(whoami("fineGrained", [("lab", "write")], {"scoped": []})),
     ["cannot write to 'lab'"]),
])
def test_preflight_fails_in_one_line(online, monkeypatch, kw, api, words):
    monkeypatch.setattr(hub, "_saved_token", lambda: None)
    with pytest.raises(RecipeError) as e:
        hub.preflight(args(**kw), api=api)
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_preflight_refuses_offline_mode(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(RecipeError, match="HF_HUB_OFFLINE is set"):
        hub.preflight(args(), api=FakeApi())


def test_push_to_hub_recipe_fails_before_anything_loads(run_cli, monkeypatch, tmp_path):
    """Through the CLI: offline, with a GPU recipe that pushes: one line, exit 2, in well under a minute."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, out, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--push_to_hub", "true", "--output_dir",
                             tmp_path / "x")
    assert code == 2 and err.count("\n") == 1 and "HF_HUB_OFFLINE is set" in err and out == ""


def grpo_args(tmp_path, *extra):
    r = parse([str(ROOT / "recipes/tiny/grpo.yaml"), "--model_name_or_path", "HuggingFaceTB/SmolLM2-135M-Instruct",
                  "--output_dir", str(tmp_path), "--hub_model_id", "me/smol-grpo", "--license", "apache-2.0",
                  *extra], check_model=False)
    return r.script_args, r.training_args, r.model_args


def test_model_card_names_base_data_rewards_metrics_and_evaluation(tmp_path):
    script_args, training_args, model_args = grpo_args(tmp_path, "--use_peft", "true")
    script_args.dataset_name = "openai/gsm8k"  # (set after parsing: offline, parse would look for it)
    (tmp_path / "eval_gsm8k.json").write_text(json.dumps({
        "dataset": "openai/gsm8k", "n": 1319, "k": 8, "accuracy": 0.412, "accuracy_lenient": 0.45,
        "sampled_accuracy": 0.38, "pass_at_k": 0.7}))
    recipe = {"task": "grpo", "learning_rate": 1e-6}
    card = hub.model_card(script_args, training_args, model_args, {"train_loss": 0.0123, "train_runtime": 61.5},
                          recipe)
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["datasets"] == ["openai/gsm8k"] and front["license"] == "apache-2.0"
    assert front["library_name"] == "peft" and {"thinktrain", "trl", "grpo", "lora"} <= set(front["tags"])
    assert "# me/smol-grpo" in card and "A LoRA adapter for `HuggingFaceTB/SmolLM2-135M-Instruct`" in card
    assert "| `accuracy` | 1 |" in card and "| `format` | 0.5 |" in card and "| `tag_count` | 0.25 |" in card
    assert "| `openai/gsm8k` | 1319 | 41.2% | 45.0% | 38.0% (k=8) | 70.0% |" in card
    assert "| train_loss | 0.0123 |" in card
    assert "learning_rate: 1.0e-06" in card and 'AutoPeftModelForCausalLM.from_pretrained("me/smol-grpo")' in card


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records every call, uploads nothing."""

    def __init__(self):
        self.calls = []

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kw):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, *, repo_id, folder_path, revision=None, run_as_future=False, ignore_patterns=None, **kw):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, revision, run_as_future, files, tuple(ignore_patterns or ())))
        done = Future()
        done.set_result(None)
        return done if run_as_future else None


def test_push_revisions_uploads_each_checkpoint_to_its_branch_in_the_background(tmp_path):
    api = RecordingApi()
    callback = hub.PushRevisions("me/run", api=api)
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "model.safetensors").write_text("w")
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    assert api.calls[0] == ("create_branch", "me/run", "checkpoint-4")
    kind, repo, revision, future, files, ignored = api.calls[1]
    assert (kind, repo, revision, future, files) == ("upload_folder", "me/run", "checkpoint-4", True,
                                                     ["model.safetensors"])
    assert "optimizer.pt" in ignored  # resume-only state stays local
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=4,
                                                                                is_world_process_zero=False), None)
    assert len(api.calls) == 2  # only the main process uploads
    callback.on_train_end(None, state, None)  # waits for the futures


def test_train_with_push_to_hub_end_to_end_at_the_api_boundary(run_cli, monkeypatch, tmp_path):
    """A tiny SFT run with push_to_hub: preflight, repo creation, a branch per checkpoint, the final push to main
    with thinktrain's model card — every huggingface_hub call recorded, nothing sent."""
    import huggingface_hub
    from huggingface_hub import RepoUrl

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once, at import
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    api = RecordingApi()
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, token=None: whoami())
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: api.calls.append(("create_repo", repo_id)) or
                        RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", lambda self, *a, **kw: api.create_branch(*a, **kw))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: api.upload_folder(**kw))
    out = tmp_path / "tiny-sft"
    code, stdout, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out, "--max_steps", "4",
                                "--save_strategy", "steps", "--save_steps", "2", "--push_to_hub", "true")
    assert code == 0, err
    assert api.calls[0] == ("create_repo", "me/tiny-sft")
    branches = [c[2] for c in api.calls if c[0] == "create_branch"]
    assert branches == ["checkpoint-2", "checkpoint-4"]
    uploads = [c for c in api.calls if c[0] == "upload_folder"]
    assert [(u[2], u[3]) for u in uploads] == [("checkpoint-2", True), ("checkpoint-4", True), (None, False)]
    final_files = uploads[-1][4]
    assert {"model.safetensors", "README.md", "recipe.yaml", "tokenizer.json"} <= set(final_files)
    card = (out / "README.md").read_text()
    assert "thinktrain" in card and "## Recipe" in card and "| train_loss |" in card
