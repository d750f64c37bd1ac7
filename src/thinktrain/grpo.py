"""GRPO: practise with verified rewards. A parsed recipe -> TRL's GRPOTrainer -> trained model in output_dir."""

from __future__ import annotations

from transformers import TrainerCallback

from . import run
from .models import load_model
from .tools import FAULTS


class ToolFaults(TrainerCallback):
    """Adds `tools/timeouts` and `tools/errors` to each log: the tool calls that timed out or raised since training
    began (tools.bounded counts them in FAULTS). TRL's own `tools/failure_frequency` cannot see them: bounded turns
    every failure into an error string the model reads, which to TRL is an answer."""

    def __init__(self):
        self.start = FAULTS.copy()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = FAULTS.copy()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        extra = {f"tools/{kind}": FAULTS[kind] - self.start[kind] for kind in ("timeouts", "errors")}
        logs.update(extra)  # the reporters (report_to) and the printer after this callback see it ...
        if state.log_history:
            state.log_history[-1].update(extra)  # ... and trainer_state.json, which Trainer.log copied before us


def add_tool_faults(trainer, recipe):
    """With tools, ToolFaults goes first among the trainer's callbacks: before the reporters, so they log it."""
    if recipe.tools:
        trainer.callback_handler.callbacks.insert(0, ToolFaults())


def main(recipe):
    from trl import GRPOTrainer, get_peft_config, get_quantization_config

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    tokenizer, train_ds, eval_ds = run.start(recipe)
    trainer = GRPOTrainer(
        model=load_model(model_args, training_args, tokenizer),
        reward_funcs=recipe.rewards,  # bound by run.start
        tools=recipe.tools or None,  # TRL's own tool loop runs them in the rollouts
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=run.callbacks(script_args, training_args),
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    add_tool_faults(trainer, recipe)
    result = run.train(trainer, recipe)
    return run.finish(trainer, result, recipe)
