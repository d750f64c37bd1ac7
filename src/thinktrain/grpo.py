"""GRPO: practise with verified rewards. A parsed recipe -> TRL's GRPOTrainer -> trained model in output_dir."""

from __future__ import annotations

from . import run
from .models import load_model


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
    result = run.train(trainer, recipe)
    return run.finish(trainer, result, recipe)
