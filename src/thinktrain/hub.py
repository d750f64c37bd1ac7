"""Sharing on the Hugging Face Hub: a preflight that fails in seconds, the model card, checkpoint revisions.

- `preflight`: with push_to_hub, before any model loads: a valid repo id, a token, the Hub reachable, and write
  access to the namespace. The Trainer itself would only find out when it creates the repo, or hours later when
  it pushes.
- `model_card`: README.md for the pushed model/adapter: base model, datasets, the recipe, rewards, final metrics,
  evaluation results (thinktrain eval JSON files in output_dir), tags, license. It replaces TRL's generic card.
- `PushRevisions`: every checkpoint is uploaded in the background to its own branch (`checkpoint-<step>`) while
  training continues, so any step can be loaded with `from_pretrained(repo, revision="checkpoint-500")`;
  the final model goes to `main` (Trainer.push_to_hub at the end).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import TrainerCallback

from .errors import RecipeError, pct

# checkpoint files that only resuming needs: not uploaded to revisions (they are large and private to the run)
_RESUME_ONLY = ["optimizer.pt", "scheduler.pt", "rng_state*.pth", "global_step*/*", "*.bin.index.json", "zero_to_fp32.py"]


def repo_id(training_args) -> str:
    """What Trainer.init_hf_repo will create: hub_model_id, or output_dir's folder name under the user."""
    return training_args.hub_model_id or Path(training_args.output_dir).absolute().name


def preflight(training_args, api=None) -> str:
    """One-line RecipeError unless a push can work; returns the full repo id (namespace/name)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    wanted = repo_id(training_args)
    try:
        validate_repo_id(wanted)
    except HFValidationError as e:
        raise RecipeError(f"hub_model_id '{wanted}' is not a valid repo id ({str(e).split('.')[0]}); use "
                          f"'name' or 'namespace/name' with letters, digits, '-', '_', '.'") from None
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        raise RecipeError("push_to_hub: true, but HF_HUB_OFFLINE is set: unset it, or pass --push_to_hub false")
    from huggingface_hub import constants

    if constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:  # the Trainer's pushes pass no token (recipe.keep_secrets_out)
        raise RecipeError("push_to_hub: true, but HF_HUB_DISABLE_IMPLICIT_TOKEN is set, so the pushes would send no "
                          "token: unset it, or pass --push_to_hub false")
    api = api or HfApi()
    token = training_args.hub_token or api.token or _saved_token()
    if not token:
        raise RecipeError("push_to_hub: true needs a Hugging Face token with write access: run `hf auth login` or "
                          "set HF_TOKEN (or pass --push_to_hub false)")
    try:
        me = api.whoami(token=token)
    except Exception as e:  # network down, DNS, proxy, 401
        first = " ".join(str(e).split())[:160]
        hint = "the token is invalid or expired" if "401" in first else "the Hub is unreachable"
        raise RecipeError(f"push_to_hub: {hint} ({first}); fix it or pass --push_to_hub false") from None
    namespace = wanted.split("/")[0] if "/" in wanted else me["name"]
    if not _can_write(me, namespace):
        raise RecipeError(f"push_to_hub: the token of '{me['name']}' cannot write to '{namespace}' (hub_model_id "
                          f"'{wanted}'); use a write token, or a namespace you can write to")
    return wanted if "/" in wanted else f"{namespace}/{wanted}"


def _saved_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _can_write(me: dict, namespace: str) -> bool:
    """From whoami: a classic write token (own namespace, or an org where the user may write), or a fine-grained
    token whose scopes include repo.write on that namespace (or on the user's repos)."""
    token = (me.get("auth") or {}).get("accessToken") or {}
    role = token.get("role")
    orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or []}
    if namespace != me.get("name") and namespace not in orgs:
        return False
    if namespace in orgs and orgs[namespace] == "read":
        return False
    if role == "write":
        return True
    if role == "fineGrained":
        for scope in (token.get("fineGrained") or {}).get("scoped") or []:
            entity = scope.get("entity") or {}
            if entity.get("name") == namespace and "repo.write" in scope.get("permissions", []):
                return True
        return namespace == me.get("name") and "repo.write" in ((token.get("fineGrained") or {}).get("global") or [])
    return False


# --------------------------------------------------------------------------- model card


def _eval_results(out: Path) -> list[dict]:
    """thinktrain eval JSON files saved in output_dir (e.g. `thinktrain eval ... --output OUT/eval_gsm8k.json`)."""
    found = []
    for path in sorted(out.glob("eval*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "accuracy" in data:
            found.append(data)
    return found


def model_card(script_args, training_args, model_args, metrics: dict, recipe: dict) -> str:
    out = Path(training_args.output_dir)
    task = script_args.task
    base = model_args.model_name_or_path
    adapter = bool(model_args.use_peft)
    tools = getattr(script_args, "tools", None) or []
    tags = ["thinktrain", "trl", task, "reasoning"] + (["lora", "peft"] if adapter else []) + \
        (["tool-use"] if tools else [])
    meta = {"library_name": "peft" if adapter else "transformers", "tags": tags}
    if not base.startswith("scratch:"):
        meta["base_model"] = base
    from .data import source_ids, source_name

    hub_ids = [i for i in source_ids(script_args) if not i.startswith("synthetic:") and not Path(i).exists()]
    if hub_ids:
        meta["datasets"] = hub_ids
    meta["license"] = script_args.license or "other"
    if task == "grpo":
        meta["pipeline_tag"] = "text-generation"

    name = repo_id(training_args)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    what = {"sft": "supervised fine-tuning (TRL SFTTrainer)", "grpo": "GRPO with verified rewards (TRL GRPOTrainer)",
            "pretrain": "pretraining from scratch",
            "rft": "expert iteration (sample, keep the verified, TRL SFTTrainer; thinktrain rft)"}[task]
    lines += [f"{'A LoRA adapter for' if adapter else 'A model trained from'} `{base}` by {what} on "
              f"`{source_name(script_args)}`, with thinktrain.", ""]
    if script_args.system_prompt:
        lines += ["Answers are written as `<think>…</think><answer>…</answer>`; the system prompt used in training:",
                  "", f"> {script_args.system_prompt}", ""]
    if tools:
        lines += [f"It was trained to call tools while it thinks: {', '.join(f'`{t}`' for t in tools)} "
                  f"({'calls and replies in its training conversations' if task == 'sft' else 'run during sampling'}"
                  f"). Give it the same tools when you generate (`thinktrain eval --tools {' '.join(tools)}`, or "
                  f"`tools=` in TRL's GRPOTrainer); without them it stops at its first call.", ""]
    if adapter:
        lines += ["Load it with peft (or merge it: `thinktrain merge ADAPTER OUT`):", "", "```python",
                  "from peft import AutoPeftModelForCausalLM",
                  f'model = AutoPeftModelForCausalLM.from_pretrained("{name}")', "```", ""]
    if task in ("grpo", "rft"):
        weights = (getattr(training_args, "reward_weights", None) or getattr(script_args, "reward_weights", None)
                   or [1.0] * len(script_args.reward_funcs))
        lines += ["## Rewards", "", "| reward | weight |", "|---|---|"]
        lines += [f"| `{r}` | {w:g} |" for r, w in zip(script_args.reward_funcs, weights)] + [""]
    evals = _eval_results(out)
    if evals:
        lines += ["## Evaluation", "", "| dataset | n | greedy (strict) | greedy (lenient) | sampled pass@1 | pass@k |",
                  "|---|---|---|---|---|---|"]
        for e in evals:
            k = f" (k={e['k']})" if e.get("k", 1) > 1 else ""
            cells = [pct(e.get(key), none="—") for key in ("accuracy", "accuracy_lenient", "sampled_accuracy",
                                                           "pass_at_k")]
            lines.append(f"| `{e.get('dataset')}` | {e.get('n')} | {cells[0]} | {cells[1]} | {cells[2]}{k} | "
                         f"{cells[3]} |")
        lines.append("")
    if metrics:
        lines += ["## Final training metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Recipe", "", "Train it again with `thinktrain train recipe.yaml` (this file is in the repo):", "",
              "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- checkpoint revisions


class PushRevisions(TrainerCallback):
    """Upload each saved checkpoint to branch `checkpoint-<step>` in the background (huggingface_hub's
    `run_as_future`); training goes on. The uploads are waited for when training ends."""

    def __init__(self, repo: str, token: str | None = None, api=None):
        from huggingface_hub import HfApi

        self.repo, self.api, self.futures = repo, api or HfApi(token=token), []

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        branch = folder.name
        self.api.create_branch(self.repo, branch=branch, exist_ok=True)
        self.futures.append(self.api.upload_folder(
            repo_id=self.repo, folder_path=str(folder), revision=branch, ignore_patterns=_RESUME_ONLY,
            commit_message=f"checkpoint at step {state.global_step}", run_as_future=True))

    def on_train_end(self, args, state, control, **kwargs):
        for future in self.futures:
            future.result()  # surface an upload error here, not silently after exit
