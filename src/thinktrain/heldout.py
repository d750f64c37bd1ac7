"""Held-out accuracy while training (recipe key heldout_steps): greedy accuracy on the first heldout_problems problems
of a held-out split, through the shared generator and graded by the accuracy reward, every heldout_steps optimizer
steps and once before the first, logged beside the loss.

The loss says how well a model imitates; for a model that should solve problems, only solving them says how it
is going (TRL logs rewards, which are measured on the problems it trains on). The entries go into
trainer_state.json's log_history and to every report_to tracker as `heldout/accuracy` with `heldout/minutes`
(training minutes so far, held-out evaluation excluded; a resumed run goes on from the last logged value), so runs
of different speed compare on one time axis (`thinktrain report` draws them). Expert iteration evaluates after
every round instead (rft.py, rounds.jsonl). The main process generates while the other ranks wait, so weights
sharded across ranks (DeepSpeed ZeRO-3, FSDP) are refused with the recipe (checks.py).

heldout_keep_best keeps the model of the best evaluation (ties: the later one) instead of the last step's, and
heldout_patience stops after that many evaluations without reaching the best: the number of SFT steps chosen on
held-out problems per run, not by a fixed schedule. The Trainer's own load_best_model_at_end cannot do it: it reads
the metric from `evaluate()` (a loss over eval_dataset, not generation) and needs a full checkpoint per evaluation;
this writes only the trainable weights (a LoRA run: the adapters) to output_dir/heldout-best.safetensors, its step
and accuracy in the file's metadata, so a preempted run resumes knowing its best.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .generation import complete, encode_prompts


def load(script_args):
    """The held-out problems (prompt + gold `solution`, shaped exactly as GRPO's), or None without heldout_steps.
    A missing split or gold column is a one-line RecipeError, before any model loads."""
    if not script_args.heldout_steps:
        return None
    from .data import problem_columns, quiet_if_local, raw_source, source_ids, source_name, split_of, to_grpo

    name = source_name(script_args)
    split = script_args.heldout_split or script_args.dataset_test_split
    with quiet_if_local(source_ids(script_args)):
        raw = raw_source(script_args)
        ds = split_of(raw, split, name, "heldout_split")
        ds = ds.select(range(min(script_args.heldout_problems, len(ds))))
        problem_columns(ds, script_args.prompt_column, script_args.answer_column, name,
                        "heldout_steps needs a question and a gold answer")
        return to_grpo(ds, script_args.prompt_column, script_args.answer_column, script_args.system_prompt, name)


def accuracy(model, tokenizer, problems, *, max_new_tokens: int, batch_size: int, tools: list = ()) -> float:
    """Greedy strict accuracy (the number in <answer>, as `thinktrain eval`'s `accuracy`) of `model` on `problems`.
    The model is put in eval mode for the call and given back as it was."""
    from .rewards import accuracy_reward

    prompts, template = encode_prompts(tokenizer, list(problems["prompt"]), tools)
    was_training = model.training
    model.eval()
    try:
        out = complete(model, tokenizer, prompts, tools=tools, chat_template=template, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, add_special_tokens=not getattr(tokenizer, "chat_template", None),
                       progress=False)
    finally:
        model.train(was_training)
    scores = accuracy_reward([c.text for c in out], solution=list(problems["solution"]))
    return sum(s == 1.0 for s in scores) / max(len(scores), 1)


def budget(recipe) -> int:
    """heldout_max_new_tokens, else the task's completion budget, else 256."""
    s, t = recipe.script_args, recipe.training_args
    return s.heldout_max_new_tokens or getattr(s, "max_completion_length", None) or \
        getattr(t, "max_completion_length", None) or 256


BEST_FILE = "heldout-best.safetensors"


def _trainable(model) -> dict:
    # named_parameters lists a tied weight once; the frozen ones never change, so they need no copy
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()
            if p.requires_grad}


def save_best(model, path: Path, step: int, value: float) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")  # a kill mid-write leaves the previous best whole
    save_file(_trainable(model), str(tmp), metadata={"step": str(step), "accuracy": repr(value)})
    os.replace(tmp, path)


def best_of(path: Path) -> tuple[int, float] | None:
    """(step, accuracy) of the kept weights, or None where there are none (or they are unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return int(meta["step"]), float(meta["accuracy"])
    except Exception:  # a half-written or foreign file: as if none was kept
        return None


def load_best(model, path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(path))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def callback(trainer, recipe):
    """A TrainerCallback that evaluates `recipe.heldout` every heldout_steps steps (and at the start)."""
    from accelerate.utils import broadcast_object_list
    from transformers import TrainerCallback

    s = recipe.script_args
    every, problems, tokens = s.heldout_steps, recipe.heldout, budget(recipe)
    keep, patience = s.heldout_keep_best, s.heldout_patience
    best_file = Path(trainer.args.output_dir) / BEST_FILE

    class HeldoutAccuracy(TrainerCallback):
        def __init__(self):
            self.started, self.evaluating, self.done, self.before = None, 0.0, set(), 0.0
            self.best, self.since = None, 0  # (step, accuracy) of the best evaluation; evaluations since it

        def on_train_begin(self, args, state, control, **kwargs):
            # a resumed run has the checkpoint's log: its evaluations are not repeated, its minutes go on
            logged = [h for h in state.log_history if "heldout/accuracy" in h]
            self.done = {h["step"] for h in logged}
            self.before = logged[-1].get("heldout/minutes", 0.0) if logged else 0.0
            if logged:  # the best so far and the evaluations since it, from the log (keep: the file's weights)
                kept = best_of(best_file) if keep else None
                top = max(logged, key=lambda h: (h["heldout/accuracy"], h["step"]))
                self.best = kept or (top["step"], top["heldout/accuracy"])
                self.since = sum(h["step"] > self.best[0] for h in logged)
            elif keep and best_file.exists() and trainer.is_world_process_zero():
                best_file.unlink()  # a fresh run: an earlier run's weights are not this one's
            self.started = time.time()
            self.evaluate(state, control)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0:
                self.evaluate(state, control)

        def evaluate(self, state, control):
            if state.global_step in self.done:
                return
            self.done.add(state.global_step)
            t = time.time()
            value = [None]
            if trainer.is_world_process_zero():  # one generator; the other ranks wait for its number
                value = [accuracy(trainer.model, trainer.processing_class, problems, max_new_tokens=tokens,
                                  batch_size=trainer.args.per_device_eval_batch_size, tools=recipe.tools)]
            if trainer.args.world_size > 1:
                value = broadcast_object_list(value)
            self.evaluating += time.time() - t
            logs = {"heldout/accuracy": value[0],
                    "heldout/minutes": round(self.before + (time.time() - self.started - self.evaluating) / 60, 3)}
            # not trainer.log: GRPOTrainer/SFTTrainer.log would flush their step metrics into this entry. The
            # handler's on_log clears should_log, which the Trainer's own logging of this step still needs.
            state.log_history.append({**logs, "step": state.global_step})
            should_log = control.should_log
            trainer.callback_handler.on_log(trainer.args, state, control, logs)
            control.should_log = should_log
            self.track(state, control, value[0])

        def track(self, state, control, value):
            if self.best is None or value >= self.best[1]:  # ties: the later, longer-trained model
                self.best, self.since = (state.global_step, value), 0
                if keep and trainer.is_world_process_zero():
                    save_best(trainer.model, best_file, state.global_step, value)
            else:
                self.since += 1
            if patience and self.since >= patience and not control.should_training_stop:
                control.should_training_stop = True
                if trainer.is_world_process_zero():
                    print(f"\nheldout: {patience} evaluations since the best accuracy ({self.best[1]:.3f} at step "
                          f"{self.best[0]}): stopping at step {state.global_step} (heldout_patience)", flush=True)

        def on_train_end(self, args, state, control, **kwargs):
            from .preemption import requested

            if not keep or requested() or self.best is None:  # preempted: the checkpoint holds the run, resumed later
                return
            # every rank passes both barriers (no early return): rank 0 wrote the file, and removes it last; a rank
            # on another node that cannot see it keeps its weights (the main process is the one that saves)
            many = args.world_size > 1
            if many:
                trainer.accelerator.wait_for_everyone()
            moved, here = self.best[0] != state.global_step, best_file.exists()
            if moved and here:
                load_best(trainer.model, best_file)
            if trainer.is_world_process_zero():
                if moved and not here:  # removed by hand mid-run: say so rather than pass the last step off as best
                    print(f"heldout: {best_file} is gone; keeping the last step's weights, not step "
                          f"{self.best[0]}'s", flush=True)
                else:
                    print(f"heldout: keeping step {self.best[0]}'s weights (held-out accuracy {self.best[1]:.3f}; "
                          f"training ended at step {state.global_step})", flush=True)
                    state.log_history.append({"heldout/best_step": self.best[0],
                                              "heldout/best_accuracy": self.best[1], "step": state.global_step})
            if many:
                trainer.accelerator.wait_for_everyone()
            if trainer.is_world_process_zero():
                best_file.unlink(missing_ok=True)

    return HeldoutAccuracy()
