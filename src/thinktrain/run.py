"""What every training run does around its trainer: set-up (seed, tokenizer, data), the header, auto-resume, the
train call (learning-rate groups, NaN guard, output_dir lock) and saving the results.

The guards live in their own modules: guard.py (NaN/inf), lr_groups.py (per-parameter rates), output_lock.py (one
run per output_dir)."""

from __future__ import annotations

import logging
from pathlib import Path

from . import checkpoints, heldout, preemption
from .guard import guard_finite
from .lr_groups import use_learning_rate_groups
from .output_lock import lock_output_dir, unlock_output_dir

log = logging.getLogger("thinktrain")


def start(recipe):
    """What the sft, grpo and rft mains do first -> (tokenizer, train, eval): the seed; the tokenizer, made ready for
    the recipe's tools (a template that can't call them stops here); the data, shaped for the task (column errors
    before the model loads); grpo/rft's rewards bound to their parameters (recipe.rewards); the header. (pretrain
    builds its tokenizer from its data: pretrain.main.)"""
    from transformers import set_seed

    from . import data
    from .models import load_tokenizer
    from .tools import prepare_tokenizer

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args, tools=recipe.tools)
    prepare_tokenizer(tokenizer, recipe.tools)
    if recipe.tools and recipe.task in ("sft", "rft"):
        training_args.assistant_only_loss = True  # tool replies are read, not written, by the model
    train_ds, eval_ds = data.load(script_args, training_args, tokenizer, recipe.tools)
    recipe.heldout = heldout.load(script_args)  # heldout_steps' problems: a missing split or column stops here
    if recipe.task in ("grpo", "rft"):  # their parameters' mistakes stop here too, before the header
        from .rewards import load_rewards

        limit = (script_args if recipe.task == "rft" else training_args).max_completion_length
        recipe.rewards = load_rewards(script_args.reward_funcs, script_args, tokenizer, limit, recipe.rewards)
    header(recipe, train_ds, None if recipe.task == "rft" else eval_ds)  # rft's SFT rounds evaluate nothing
    return tokenizer, train_ds, eval_ds


def precision(training_args) -> str:
    return "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"


def header(recipe, train_ds, eval_ds) -> str:
    """A few lines that tell the user at once what is about to happen (printed on the main process)."""
    from . import data

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
        f"  dataset    {data.source_name(script_args)} ({size})",
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
                     f"{' + '.join([script_args.correctness_reward, *script_args.required_rewards])} -> SFT)")
    if recipe.heldout is not None:
        when = "after every round" if task == "rft" else f"every {script_args.heldout_steps} steps and at the start"
        lines.append(f"  heldout    greedy accuracy on {len(recipe.heldout)} problems of "
                     f"{script_args.heldout_split or script_args.dataset_test_split}, {when}"
                     f"{'; keeps the best' if script_args.heldout_keep_best else ''}"
                     f"{f'; stops after {script_args.heldout_patience} without reaching it' if script_args.heldout_patience else ''}")
    steps = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else f"{training_args.num_train_epochs:g} epochs"
    lines.append(f"  schedule   {steps}, lr {training_args.learning_rate:g}")
    lines.append(f"  output     {training_args.output_dir}")
    text = "\n".join(lines)
    if training_args.process_index == 0:
        print(text, flush=True)
    return text


def fit(trainer, script_args, checkpoint: str | None = None):
    """trainer.train() with the recipe's learning_rate_groups, stopping at the first NaN/inf (guard_finite), and at the
    end of the step in which a preemption signal arrived, after saving a checkpoint there (preemption): what every
    trainer of a run goes through, expert iteration's rounds included. A save that finds the disk full stops in one
    line (checkpoints.disk_full_error)."""
    if script_args.learning_rate_groups:
        use_learning_rate_groups(trainer, script_args.learning_rate_groups, trainer.args.learning_rate)
    guard_finite(trainer, checkpoint)
    stopper = preemption.callback()
    trainer.add_callback(stopper)
    try:
        with preemption.deferred():
            result = trainer.train(resume_from_checkpoint=checkpoint)
    except Exception as e:
        if checkpoints.disk_full(e, trainer.args.output_dir):
            raise checkpoints.disk_full_error(trainer.args.output_dir, trainer.state.global_step) from None
        raise
    preemption.stop_if_preempted(trainer, stopper)
    return result


def train(trainer, recipe):
    """fit() with auto-resume, holding output_dir's lock (released by finish, or here on any error)."""
    script_args, training_args = recipe.script_args, recipe.training_args
    lock_output_dir(training_args)
    try:
        if getattr(recipe, "heldout", None) is not None:
            trainer.add_callback(heldout.callback(trainer, recipe))
        return fit(trainer, script_args, checkpoints.to_resume(script_args, training_args))
    except BaseException:
        unlock_output_dir(training_args)
        for callback in trainer.callback_handler.callbacks:  # end the progress bar's line: the error gets its own
            bar = getattr(callback, "training_bar", None)
            if bar is not None and hasattr(bar, "close"):
                bar.close()
                callback.training_bar = None
        raise


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
    """Save model (or adapter) + tokenizer, the resolved recipe, metrics and state; push; close the trainer. A
    preemption signal meanwhile waits for it: training is done, and a final model cut mid-save would be lost."""
    with preemption.deferred():
        return _finish(trainer, train_result, recipe)


def _finish(trainer, train_result, recipe):
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    out = Path(training_args.output_dir)
    if getattr(trainer, "thinktrain_guard", None):  # (run.train) never save NaN weights as the final model
        trainer.thinktrain_guard.check_weights(trainer.model, trainer.state.global_step)
    # _internal_call: with push_to_hub, save_model would push right away, before the card and recipe exist; the
    # one final push is below
    try:
        trainer.save_model(str(out), _internal_call=True)
    except Exception as e:
        if checkpoints.disk_full(e, str(out)):
            raise checkpoints.disk_full_error(str(out), None) from None
        raise
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
    unlock_output_dir(training_args)  # (taken by run.train; an error before this: output_lock's atexit hook)
    return metrics
