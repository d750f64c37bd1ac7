"""GRPO: practise with verified rewards. A parsed recipe -> TRL's GRPOTrainer -> trained model in output_dir."""

from __future__ import annotations

from . import data, run
from .models import load_model, load_tokenizer
from .rewards import load_rewards
from .tools import load_tools, prepare_tokenizer


def main(recipe):
    from transformers import set_seed
    from trl import GRPOTrainer, get_peft_config, get_quantization_config

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    set_seed(training_args.seed)
    tools = load_tools(script_args.tools)
    tokenizer = load_tokenizer(model_args, training_args, tools=tools)
    prepare_tokenizer(tokenizer, tools)  # a template that can't do tools stops here, before the model loads
    train_ds, eval_ds = data.load(script_args, training_args, tokenizer)  # column errors before the model loads
    rewards = load_rewards(script_args.reward_funcs, script_args, tokenizer, training_args.max_completion_length)
    run.header(recipe, train_ds, eval_ds)
    trainer = GRPOTrainer(
        model=load_model(model_args, training_args, tokenizer),
        reward_funcs=rewards,
        tools=tools or None,  # TRL's own tool loop runs them in the rollouts
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
