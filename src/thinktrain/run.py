"""What every training run does around its trainer: the header, auto-resume, and saving the results."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

from .errors import RecipeError

log = logging.getLogger("thinktrain")


def precision(training_args) -> str:
    return "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"


def header(recipe, train_ds, eval_ds) -> str:
    """A few lines that tell the user at once what is about to happen (printed on the main process)."""
    task, script_args, training_args, model_args = (recipe.task, recipe.script_args, recipe.training_args,
                                                    recipe.model_args)
    world = training_args.world_size
    per_device, accum = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    size = f"{len(train_ds):,} train" if hasattr(train_ds, "__len__") else "streaming"
    if eval_ds is not None and hasattr(eval_ds, "__len__"):
        size += f" / {len(eval_ds):,} eval"
    adapter = f" + LoRA r={model_args.lora_r}" if model_args.use_peft else ""
    quant = " (4-bit)" if model_args.load_in_4bit else " (8-bit)" if model_args.load_in_8bit else ""
    fallback = recipe.bf16_fallback  # recipe.parse: CPU bf16 where the CPU has none
    lines = [
        f"thinktrain {task}: {model_args.model_name_or_path}{quant}{adapter}",
        f"  dataset    {script_args.dataset_name} ({size})",
        f"  processes  world_size={world} on {training_args.device.type}, precision {precision(training_args)}"
        + (f" ({fallback})" if fallback else ""),
        f"  batch      {per_device} per device x {accum} accumulation x {world} = {per_device * accum * world} "
        f"{'completions' if task == 'grpo' else 'sequences'} per step",
    ]
    if task == "grpo":
        lines.append(f"  generation {training_args.num_generations} per prompt, {training_args.max_completion_length} "
                     f"new tokens max, rewards {', '.join(script_args.reward_funcs)}")
    steps = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else f"{training_args.num_train_epochs:g} epochs"
    lines.append(f"  schedule   {steps}, lr {training_args.learning_rate:g}")
    lines.append(f"  output     {training_args.output_dir}")
    text = "\n".join(lines)
    if training_args.process_index == 0:
        print(text, flush=True)
    return text


def _complete(checkpoint: Path) -> bool:
    # The Trainer writes trainer_state.json after the weights and optimizer: a checkpoint without it was
    # interrupted mid-save and must never be resumed from.
    return (checkpoint / "trainer_state.json").is_file()


def checkpoint_to_resume(script_args, training_args) -> str | None:
    """An explicit resume_from_checkpoint wins; else the newest complete checkpoint in output_dir."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    out = Path(training_args.output_dir)
    if not script_args.auto_resume or not out.is_dir():
        return None
    found = [p for p in out.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and _complete(p)]
    if not found:
        return None
    last = max(found, key=lambda p: int(p.name.split("-")[1]))
    if training_args.process_index == 0:
        print(f"  resuming   from {last} (set auto_resume: false to start over)", flush=True)
    return str(last)


def train(trainer, recipe):
    """trainer.train() with the recipe's learning_rate_groups and auto-resume."""
    script_args, training_args = recipe.script_args, recipe.training_args
    if script_args.learning_rate_groups:
        use_learning_rate_groups(trainer, script_args.learning_rate_groups, training_args.learning_rate)
    return trainer.train(resume_from_checkpoint=checkpoint_to_resume(script_args, training_args))


def _first_match(name: str, groups: dict[str, float]) -> str | None:
    return next((pattern for pattern in groups if re.search(pattern, name)), None)


def use_learning_rate_groups(trainer, groups: dict[str, float], learning_rate: float) -> None:
    """Make the Trainer's own optimizer (its class, weight-decay groups, schedule; DeepSpeed asks it too) put the
    parameters matching each regex into a group with that learning rate. The Trainer has per-decay groups but no
    per-parameter learning rates; this is the one hook it offers for them. Parameters whose rate is 0 are frozen
    instead: on any schedule, and with AdamW's decoupled decay, they would never move, and without gradients the
    backward pass stops where the trainable weights end (norm-only GRPO: a step ~40% cheaper). The one
    difference is max_grad_norm, which now measures only the trainable weights' gradients."""
    frozen = freeze_zero_rate(trainer.model, groups, learning_rate)
    groups = {pattern: lr for pattern, lr in groups.items() if lr > 0}
    create = trainer.create_optimizer

    def create_optimizer(model=None):
        if trainer.optimizer is not None:
            return trainer.optimizer
        optimizer = create(model)
        moved = split_param_groups(optimizer, trainer.model if model is None else model, groups)
        if trainer.is_world_process_zero():
            for pattern, names in moved.items():
                more = " ..." if len(names) > 3 else ""
                print(f"  lr {groups[pattern]:g} for {len(names)} parameter(s) matching '{pattern}': "
                      f"{', '.join(names[:3])}{more}", flush=True)
        return optimizer

    trainer.create_optimizer = create_optimizer
    if frozen and trainer.is_world_process_zero():
        total = sum(_numel(p) for p in trainer.model.parameters())
        print(f"  frozen     {frozen:,} of {total:,} weights (learning rate 0)", flush=True)


def freeze_zero_rate(model, groups: dict[str, float], learning_rate: float) -> int:
    """requires_grad=False for every parameter whose rate (its first matching group's, else learning_rate) is 0;
    returns how many weights that froze. A pattern that matches no trainable parameter is an error."""
    unmatched, frozen = set(groups), 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pattern = _first_match(name, groups)
        unmatched.discard(pattern)
        if (groups[pattern] if pattern is not None else learning_rate) == 0:
            p.requires_grad_(False)
            frozen += _numel(p)
    if unmatched:  # (all rates 0 is refused with the recipe; a matching positive group always trains something)
        _no_match(sorted(unmatched)[0], model)
    return frozen


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # under ZeRO-3 a parameter is an empty shard until gathered


def _no_match(pattern: str, model):
    examples = ", ".join([n for n, _ in model.named_parameters()][-3:])
    raise RecipeError(f"learning_rate_groups: '{pattern}' matches no trainable parameter (names look like {examples})")


def split_param_groups(optimizer, model, groups: dict[str, float]) -> dict[str, list[str]]:
    """Move the parameters whose name matches a regex of `groups` (first match wins) out of the optimizer's
    groups into copies of them with that learning rate; returns {regex: names moved}. Called before any step, so
    there is no optimizer state to move."""
    names = {id(p): n for n, p in model.named_parameters()}
    moved = {pattern: [] for pattern in groups}
    new_groups = []
    for group in optimizer.param_groups:
        split = {pattern: [] for pattern in [*groups, None]}  # None: stays in this group
        for p in group["params"]:
            split[_first_match(names.get(id(p), ""), groups)].append(p)
        group["params"] = split.pop(None)
        for pattern, params in split.items():
            moved[pattern] += [names[id(p)] for p in params]
        new_groups += [{**group, "params": ps, "lr": groups[pat]} for pat, ps in split.items() if ps]
    unmatched = [pattern for pattern, found in moved.items() if not found]
    if unmatched:
        _no_match(unmatched[0], model)
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]] + new_groups
    return moved


def callbacks(script_args, training_args) -> list:
    """Callbacks thinktrain adds to a trainer: checkpoint revisions on the Hub."""
    if not (training_args.push_to_hub and script_args.push_revisions):
        return []
    from transformers.trainer_utils import HubStrategy

    from .hub import PushRevisions, repo_id

    # Each checkpoint goes to its own branch; the Trainer's own checkpoint pushes would duplicate them on main.
    training_args.hub_strategy = HubStrategy.END
    return [PushRevisions(repo_id(training_args), token=training_args.hub_token)]


def finish(trainer, train_result, recipe):
    """Save model (or adapter) + tokenizer, the resolved recipe, metrics and state; push; close the trainer."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    out = Path(training_args.output_dir)
    # _internal_call: with push_to_hub, save_model would push right away, before the card and recipe exist; the
    # one final push is below
    trainer.save_model(str(out), _internal_call=True)
    metrics = dict(train_result.metrics)
    if hasattr(trainer.train_dataset, "__len__"):  # a streamed dataset has no length
        metrics["train_samples"] = len(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(out))
        resolved = recipe.resolved()
        (out / "recipe.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        print(f"saved {'adapter' if model_args.use_peft else 'model'} + tokenizer + recipe.yaml to {out}", flush=True)
    if training_args.push_to_hub:
        if trainer.is_world_process_zero():
            from .hub import model_card

            (out / "README.md").write_text(model_card(script_args, training_args, model_args, metrics, resolved))
            trainer.create_model_card = lambda *a, **k: None  # keep ours: TRL's generic card would overwrite it
        trainer.push_to_hub(commit_message="thinktrain: final model")
    trainer.end()  # finish trackers, destroy the process group (avoids a rare SIGABRT at exit under gloo)
    return metrics
