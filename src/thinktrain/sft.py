"""SFT: imitate worked problems. A parsed recipe -> TRL's SFTTrainer -> trained model in output_dir."""

from __future__ import annotations

from . import data, run
from .models import load_model, load_tokenizer
from .tools import load_tools, prepare_tokenizer


def main(recipe):
    from transformers import set_seed
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    set_seed(training_args.seed)
    tools = load_tools(script_args.tools)
    tokenizer = load_tokenizer(model_args, training_args, tools=tools)
    if tools:
        prepare_tokenizer(tokenizer, tools)
        # the calculator's replies are read, not written, by the model (the run header says so)
        training_args.assistant_only_loss = True
    train_ds, eval_ds = data.load(script_args, training_args, tokenizer)  # column errors before the model loads
    run.header(recipe, train_ds, eval_ds)
    trainer = SFTTrainer(
        model=load_model(model_args, training_args, tokenizer),
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
