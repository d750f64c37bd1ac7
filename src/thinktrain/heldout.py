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
"""

from __future__ import annotations

import time

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


def callback(trainer, recipe):
    """A TrainerCallback that evaluates `recipe.heldout` every heldout_steps steps (and at the start)."""
    from accelerate.utils import broadcast_object_list
    from transformers import TrainerCallback

    every, problems, tokens = recipe.script_args.heldout_steps, recipe.heldout, budget(recipe)

    class HeldoutAccuracy(TrainerCallback):
        def __init__(self):
            self.started, self.evaluating, self.done, self.before = None, 0.0, set(), 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            # a resumed run has the checkpoint's log: its evaluations are not repeated, its minutes go on
            logged = [h for h in state.log_history if "heldout/accuracy" in h]
            self.done = {h["step"] for h in logged}
            self.before = logged[-1].get("heldout/minutes", 0.0) if logged else 0.0
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

    return HeldoutAccuracy()
