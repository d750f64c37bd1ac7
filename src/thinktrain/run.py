"""What every training run does around its trainer: the header, auto-resume, and saving the results."""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import socket
import time
from pathlib import Path

from .errors import RecipeError, RunError

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
    if task in ("grpo", "rft"):  # rft keeps these on its script arguments (its trainer config is SFTConfig's)
        sampling = script_args if task == "rft" else training_args
        lines.append(f"  generation {sampling.num_generations} per prompt, {sampling.max_completion_length} "
                     f"new tokens max, rewards {', '.join(script_args.reward_funcs)}")
    if script_args.tools:
        limit = (getattr(script_args, "max_tool_calling_iterations", None)
                 or getattr(training_args, "max_tool_calling_iterations", None))
        how = {"sft": "calls from the data's <<expr=result>> annotations; loss on the model's turns only",
               "pretrain": "the tokenizer learns their call format"}.get(
            task, f"called while sampling, replies count against the token budget"
                  f"{f', at most {limit} rounds' if limit else ''}")
        lines.append(f"  tools      {', '.join(script_args.tools)} ({how})")
    if task == "rft":
        per_round = script_args.prompts_per_round or "all"
        lines.append(f"  rounds     {script_args.rounds} x ({per_round} prompts -> keep {script_args.selection} by "
                     f"{script_args.correctness_reward} -> SFT)")
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
    """trainer.train() with the recipe's learning_rate_groups and auto-resume, holding output_dir's lock (released by
    finish, or here on any error) and stopping at the first NaN/inf (guard_finite)."""
    script_args, training_args = recipe.script_args, recipe.training_args
    lock_output_dir(training_args)
    try:
        if script_args.learning_rate_groups:
            use_learning_rate_groups(trainer, script_args.learning_rate_groups, training_args.learning_rate)
        checkpoint = checkpoint_to_resume(script_args, training_args)
        guard_finite(trainer, checkpoint)
        return trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        unlock_output_dir(training_args)
        for callback in trainer.callback_handler.callbacks:  # end the progress bar's line: the error gets its own
            bar = getattr(callback, "training_bar", None)
            if bar is not None and hasattr(bar, "close"):
                bar.close()
                callback.training_bar = None
        raise


# --------------------------------------------------------------------------- faults: NaN/inf

def guard_finite(trainer, resumed_from: str | None):
    """Stop the run with a RunError at the first NaN/inf loss or gradient norm, before the optimizer step that would
    put it into the weights, and check the trainable weights before every save (finish checks them once more), so
    that output_dir only ever holds finite weights. Also makes a resumed run use the learning rate it was given.

    The numbers are tested where they are still real: the Trainer replaces a NaN loss by the mean of earlier ones in
    its logs (logging_nan_inf_filter) and never tests the gradient norm. Cost: the loss check reads the value the
    Trainer's own filter already syncs on each micro-batch; the gradient norm is the one the Trainer computes anyway
    (read once per optimizer step); the full weight scan runs only before a save, which reads every weight anyway.
    Under DDP the gradients, hence their norm, are the same on every rank: all ranks stop at the same step."""
    import torch
    from transformers import TrainerCallback

    args, accelerator = trainer.args, trainer.accelerator

    class Guard(TrainerCallback):
        def __init__(self):
            self.checkpoints = [resumed_from] if resumed_from else []  # this run's good ones, newest last
            self.base_lrs = None  # the schedule's rates as the recipe made them, before a checkpoint is loaded

        def stop(self, step: int, what: str, value: str):
            good = self.checkpoints[-1] if self.checkpoints else None
            where = (f"the last good checkpoint is {good} (nothing later was saved): keep going with "
                     f"--resume_from_checkpoint {good} and a lower --learning_rate" if good else
                     "no checkpoint was saved before it: rerun with a lower --learning_rate")
            raise RunError(f"step {step}: {what} is {value}; {where} (now {args.learning_rate:g})")

        def check_weights(self, model, step: int):
            # only trainable weights can have changed: with LoRA or frozen groups this scans a small part
            for p in model.parameters():
                if p.requires_grad and p.numel() and not torch.isfinite(p).all():
                    self.stop(step, "a weight", f"{p.detach()[~torch.isfinite(p)].flatten()[0].item()}")

        def on_step_end(self, args, state, control, model=None, **kwargs):  # after DefaultFlowCallback decided
            if control.should_save:
                self.check_weights(model, state.global_step)

        on_epoch_end = on_step_end

        def on_save(self, args, state, control, **kwargs):
            self.checkpoints.append(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

        def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            # Resuming restores the checkpoint's schedule, learning rates included: a run resumed with a lower
            # learning_rate (the way on after a NaN) would silently keep the old one. Keep the schedule's
            # position and shape, with the rates of this run.
            scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
            lambdas, base = getattr(scheduler, "lr_lambdas", None), self.base_lrs
            if not resumed_from or not lambdas or not base or list(scheduler.base_lrs) == base:
                return
            old, scheduler.base_lrs = list(scheduler.base_lrs), base
            for group, lr, factor in zip(optimizer.param_groups, base, lambdas):
                group["initial_lr"], group["lr"] = lr, lr * factor(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
            if state.is_world_process_zero:
                rates = [", ".join(f"{lr:g}" for lr in dict.fromkeys(lrs)) for lrs in (base, old)]
                print(f"  lr         {rates[0]} from step {state.global_step} on (the checkpoint had {rates[1]})",
                      flush=True)

    guard = Guard()
    trainer.add_callback(guard)  # after DefaultFlowCallback: on_step_end sees its should_save
    trainer.thinktrain_guard = guard  # finish checks the weights once more before the final save

    create_scheduler = trainer.create_scheduler

    def remember_base_lrs(*a, **kw):
        scheduler = create_scheduler(*a, **kw)
        if guard.base_lrs is None:
            guard.base_lrs = list(getattr(scheduler, "base_lrs", None) or []) or None
        return scheduler

    trainer.create_scheduler = remember_base_lrs

    training_step = trainer.training_step

    def checked_training_step(*a, **kw):
        loss = training_step(*a, **kw)
        if not torch.isfinite(loss).all():
            guard.stop(trainer.state.global_step + 1, "the loss", f"{loss.detach().float().sum().item()}")
        return loss

    trainer.training_step = checked_training_step
    # fp16's GradScaler meets inf gradients by design (it skips that step and lowers the scale), and DeepSpeed clips
    # inside its engine and reports the previous step's norm: there the loss and weight checks stand alone
    if accelerator.scaler is None and not trainer.is_deepspeed_enabled:
        clip_grad_norm_ = accelerator.clip_grad_norm_  # the Trainer's one call for the norm, clipping or not

        def checked_clip_grad_norm_(*a, **kw):
            norm = clip_grad_norm_(*a, **kw)
            if norm is not None and not math.isfinite(float(norm)):
                guard.stop(trainer.state.global_step + 1, "the gradient norm", f"{float(norm)}")
            return norm

        accelerator.clip_grad_norm_ = checked_clip_grad_norm_


# --------------------------------------------------------------------------- faults: two runs on one output_dir

LOCK = "_thinktrain.lock"  # '_': Trainer.push_to_hub leaves _* files out of what it uploads
_held: dict[str, str] = {}  # lock file -> the text this process wrote into it


def lock_output_dir(training_args) -> None:
    """Refuse to start while another run works in output_dir: a lock file naming its owner (pid, host), created
    with its content in one step (os.link of a written file). A lock whose owner is gone (pid not alive on this
    host: the run was killed) is taken over. Only the main process of a launch locks; its other ranks work under
    its lock."""
    if training_args.process_index != 0:
        return
    out = Path(training_args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RecipeError(f"output_dir {out} cannot be created: {e.strerror}") from None
    path, pid = out / LOCK, os.getpid()
    text = json.dumps({"pid": pid, "host": socket.gethostname(), "started": _start_time(pid),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    for _ in range(10):  # each pass either takes the lock, refuses, or removes a stale one
        if _create(path, text):
            _held[str(path)] = text
            return
        owner = _read(path)
        if owner is None:  # released (or taken over) between the two calls: try again
            continue
        if not owner:
            raise RunError(f"output_dir {out} holds a lock file that is not thinktrain's: delete {path} if no run "
                           f"uses {out}")
        if owner.get("host") != socket.gethostname():
            raise RunError(f"output_dir {out} is in use by pid {owner.get('pid')} on {owner.get('host')} (since "
                           f"{owner.get('since')}); use another output_dir, or delete {path} if that run is gone")
        if owner.get("pid") != pid and _alive(owner.get("pid"), owner.get("started")):
            raise RunError(f"output_dir {out} is in use by another run (pid {owner['pid']}, since "
                           f"{owner.get('since')}); wait for it to end or use another output_dir")
        _remove_stale(path, owner)  # its run was killed (or was an earlier run of this very process)
    raise RunError(f"output_dir {out}: could not take {path}; delete it if no run uses {out}")


def unlock_output_dir(training_args) -> None:
    path = Path(training_args.output_dir) / LOCK
    text = _held.pop(str(path), None)
    try:
        if text is not None and path.read_text() == text:  # never remove a lock that a later run took over
            path.unlink()
    except OSError:
        pass


@atexit.register
def _unlock_all():  # a run that ends by an error after train (in finish): no lock outlives its process
    for path in list(_held):
        text = _held.pop(path)
        try:
            if Path(path).read_text() == text:
                Path(path).unlink()
        except OSError:
            pass


def _create(path: Path, text: str) -> bool:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # atomic, and never replaces an existing lock; the lock appears with its content
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: an exclusive create, then the content
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink()


def _read(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: not ours, owner unknown (refused as in use by pid None: delete it by hand)
    return owner if isinstance(owner, dict) else {}


def _proc_stat(pid) -> list[str] | None:
    """/proc/PID/stat from its state on (Linux); None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid) -> int | None:
    # when the process started (clock ticks since boot): with the pid it names one process, so a pid that the
    # system gave to another process after the run was killed does not keep the stale lock alive
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid, started) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a pid we can check: assume the owner lives
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    fields = _proc_stat(pid)
    if fields is None:  # no /proc (or hidden): the pid answered, so take it as alive
        return True
    return fields[0] != "Z" and (started is None or int(fields[19]) == started)  # Z: killed, not yet reaped


def _remove_stale(path: Path, owner: dict) -> None:
    """Remove the lock if it still holds `owner`. Several runs may find the same stale lock: an exclusive flock on
    output_dir makes their check-then-remove one step each, so none removes the fresh lock another just made."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        except (ImportError, OSError):  # no flock here (some network filesystems): best effort
            pass
        if _read(path) == owner:
            path.unlink()
    finally:
        os.close(fd)


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
    if getattr(trainer, "thinktrain_guard", None):  # (run.train) never save NaN weights as the final model
        trainer.thinktrain_guard.check_weights(trainer.model, trainer.state.global_step)
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
        (out / "recipe.yaml").write_text(recipe.to_yaml())  # secrets left out, named in a comment
        print(f"saved {'adapter' if model_args.use_peft else 'model'} + tokenizer + recipe.yaml to {out}", flush=True)
    if training_args.push_to_hub:
        if trainer.is_world_process_zero():
            from .hub import model_card

            (out / "README.md").write_text(model_card(script_args, training_args, model_args, metrics, resolved))
            trainer.create_model_card = lambda *a, **k: None  # keep ours: TRL's generic card would overwrite it
        trainer.push_to_hub(commit_message="thinktrain: final model")
    trainer.end()  # finish trackers, destroy the process group (avoids a rare SIGABRT at exit under gloo)
    unlock_output_dir(training_args)  # (taken by run.train; an error before this: the atexit hook above)
    return metrics
