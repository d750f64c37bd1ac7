"""A NaN/inf stops a run in one line, before it reaches the weights; a resumed run keeps the learning rate given."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import RunError


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
