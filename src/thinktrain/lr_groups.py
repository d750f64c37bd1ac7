"""learning_rate_groups: per-parameter learning rates (regex -> rate) on the Trainer's own optimizer; rate 0 freezes."""

from __future__ import annotations

import re

from .errors import RecipeError


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
