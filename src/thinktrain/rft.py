"""Expert iteration (rejection-sampling fine-tuning; STaR, RFT on GSM8K): practise by keeping what was verified.

Each round (1) samples `num_generations` completions for `prompts_per_round` practice prompts with the current
model, through the shared generator (generation.complete); (2) scores them with the recipe's
reward_funcs, exactly as GRPO would (same reward functions, same keyword arguments); (3) keeps per prompt what
`selection` picks (default: among the completions the correctness reward scores 1, the highest total reward, ties
to the fewest tokens; nothing when none is right); (4) trains on the kept pairs with TRL's SFTTrainer and the
recipe's SFTConfig (learning_rate, max_steps or num_train_epochs per round, ...); (5) starts the next round from
the result.

output_dir/round-N/ holds round N's model, its kept pairs (kept.jsonl, then sampling.json) and round.json, which is
written last: a round without it was interrupted; the rerun keeps its sampled pairs if sampling.json was written
(else samples again) and resumes its training from a preemption checkpoint if there is one (else trains it again). output_dir/rounds.jsonl logs every
round; output_dir gets the final model, recipe.yaml and the last round's metrics, as any task. Sampling runs on
the main process (the others wait); each round's SFT runs under the launch's accelerate config, as task sft.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

from . import checkpoints, data, heldout, preemption, run
from .errors import PREEMPTED_EXIT, Preempted, RecipeError
from .models import load_model, model_init_kwargs, scratch_preset
from .output_lock import lock_output_dir, unlock_output_dir


# --------------------------------------------------------------------------- selection


def select(texts: list[str], correct: list[bool], totals: list[float], tokens: list[int], rule: str) -> list[int]:
    """Indices of the kept completions of one prompt. best_correct: the correct one with the highest total
    reward, ties to the fewest tokens (then the first); all_correct: every correct one with a text not seen
    before. Nothing when none is correct."""
    right = [i for i, ok in enumerate(correct) if ok]
    if not right:
        return []
    if rule == "best_correct":
        return [min(right, key=lambda i: (-totals[i], tokens[i], i))]
    if rule == "all_correct":
        seen: set[str] = set()
        return [i for i in right if not (texts[i] in seen or seen.add(texts[i]))]
    raise RecipeError(f"selection '{rule}' does not exist")  # configs.RFTArguments refuses it at parse time


def score(rewards, completions: list, ids: list[tuple], rows: list[dict]) -> list[list]:
    """Each reward's scores (None = no opinion) for completions of the given dataset rows, called as GRPOTrainer
    calls them: conversational completions (a text becomes one assistant turn; a tool-using completion is already
    its turns), the prompts, completion_ids and every dataset column as kwargs."""
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"} if rows else {}
    messages = [[{"role": "assistant", "content": c}] if isinstance(c, str) else list(c) for c in completions]
    return [list(fn(messages, prompts=[row["prompt"] for row in rows], completion_ids=[list(i) for i in ids],
                    **columns)) for fn in rewards]


def total(scores: list[list], weights: list[float], i: int) -> float:
    return sum(w * (s[i] or 0.0) for w, s in zip(weights, scores))


# --------------------------------------------------------------------------- one round


def round_prompts(n_rows: int, per_round: int | None, round_index: int, seed: int) -> list[int]:
    """Row indices for round `round_index` (1-based): consecutive slices of one seeded shuffle, wrapping around,
    so every round practises on problems the previous rounds did not see while there are any."""
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    if per_round is None or per_round >= n_rows:
        return order
    start = ((round_index - 1) * per_round) % n_rows
    return [order[(start + j) % n_rows] for j in range(per_round)]


def sample_and_keep(model, tokenizer, rows: list[dict], rewards, weights: list[float], args, seed: int,
                    tools: list = ()) -> tuple[list[dict], dict]:
    """(kept pairs as SFT rows, the round's sampling stats); `args` is the recipe's RFTArguments."""
    from transformers import set_seed

    from .generation import complete, encode_prompts

    k = args.num_generations
    has_template = bool(getattr(tokenizer, "chat_template", None))
    set_seed(seed)
    model.eval()
    prompts, template = encode_prompts(tokenizer, [row["prompt"] for row in rows], tools)  # tools: GRPO's loop
    samples = complete(model, tokenizer, [p for p in prompts for _ in range(k)], tools=tools, chat_template=template,
                       max_iterations=args.max_tool_calling_iterations, max_new_tokens=args.max_completion_length,
                       batch_size=args.sampling_batch_size, do_sample=True, temperature=args.temperature,
                       add_special_tokens=not has_template, desc=f"sampling {k} per prompt")
    completions = [list(s.messages) if tools else s.text for s in samples]
    expanded = [row for row in rows for _ in range(k)]
    scores = score(rewards, completions, [s.ids for s in samples], expanded)
    right = scores[args.reward_funcs.index(args.correctness_reward)]
    required = [scores[args.reward_funcs.index(name)] for name in args.required_rewards]
    ok = [r == 1.0 and all(s[i] == 1.0 for s in required) for i, r in enumerate(right)]
    kept, solved = [], 0
    for p, row in enumerate(rows):
        mine = range(p * k, (p + 1) * k)
        chosen = select([samples[i].text for i in mine], [ok[i] for i in mine],
                        [total(scores, weights, i) for i in mine], [samples[i].tokens for i in mine],
                        args.selection)
        solved += bool(chosen)
        kept += [{"prompt": row["prompt"], "completion": completions[p * k + j] if tools else
                  [{"role": "assistant", "content": samples[p * k + j].text}],
                  "tokens": samples[p * k + j].tokens, "reward": total(scores, weights, p * k + j)}
                 for j in chosen]
    stats = {"prompts": len(rows), "solved": solved / max(len(rows), 1), "sampled_correct": sum(
        s == 1.0 for s in right) / max(len(right), 1), "kept": len(kept),
        **({"sampled_verified": sum(ok) / max(len(ok), 1)} if required else {}),
        "mean_kept_tokens": sum(r["tokens"] for r in kept) / len(kept) if kept else None}
    return kept, stats


# --------------------------------------------------------------------------- the task


def completed_rounds(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in out.glob("round-*/round.json")
                  if p.parent.name.split("-")[1].isdigit())


def check(recipe):
    """What rft does not do (yet), refused before anything loads."""
    model_args = recipe.model_args
    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        raise RecipeError("rft trains the full model each round (LoRA/quantized rounds are not built yet): set "
                          "use_peft, load_in_4bit and load_in_8bit to false")


def load_round_model(source: str, model_args, training_args, tokenizer):
    """The model a round starts from: the previous round's folder, else the recipe's model (a scratch preset
    only for plumbing checks: a random model solves nothing, so nothing is kept)."""
    from transformers import AutoModelForCausalLM

    if scratch_preset(source):
        return load_model(model_args, training_args, tokenizer)
    return AutoModelForCausalLM.from_pretrained(source, **model_init_kwargs(model_args, training_args))


def main(recipe):
    from accelerate import PartialState

    script_args, training_args = recipe.script_args, recipe.training_args
    check(recipe)
    worked = (data.worked_rows(script_args, script_args.worked_split, "worked_split", recipe.tools)
              if script_args.worked_split else [])  # its mistakes before the header, as the data's
    tokenizer, practice, _ = run.start(recipe)  # conversational prompt + solution, as GRPO's
    rewards = recipe.rewards  # bound by run.start
    weights = script_args.reward_weights or [1.0] * len(rewards)
    state, out = PartialState(), Path(training_args.output_dir)
    lock_output_dir(training_args)  # one run per output_dir (released by finish, or below on any error)
    try:
        return _rounds(recipe, state, out, tokenizer, practice, rewards, weights, recipe.tools, worked)
    except BaseException:
        unlock_output_dir(training_args)
        raise


def _rounds(recipe, state, out: Path, tokenizer, practice, rewards, weights: list[float], tools: list,
            worked: list[dict]):
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    done = completed_rounds(out)
    if done and state.is_main_process:
        print(f"  resuming   after round {done[-1]} of {script_args.rounds} (round-{done[-1]}/ holds its model; "
              f"set auto_resume: false to start over)", flush=True)
    if done and not script_args.auto_resume:
        raise RecipeError(f"output_dir {out} holds rft rounds {done}; with auto_resume: false, use an empty "
                          f"output_dir")
    source = str(out / f"round-{done[-1]}") if done else model_args.model_name_or_path
    rows = practice.to_list()
    trainer = result = None
    for r in range(len(done) + 1, script_args.rounds + 1):
        started, round_dir = time.time(), out / f"round-{r}"
        sampled = (round_dir / "sampling.json").is_file()  # written after kept.jsonl: this round's pairs are whole
        if state.is_main_process and not sampled:
            shutil.rmtree(round_dir, ignore_errors=True)  # a round interrupted while sampling is redone from its start
            round_dir.mkdir(parents=True)
        state.wait_for_everyone()
        trainer = result = None  # the previous round's trainer holds its model: free it before loading the next
        model = load_round_model(source, model_args, training_args, tokenizer).to(training_args.device)
        chosen = [rows[i] for i in round_prompts(len(rows), script_args.prompts_per_round, r, training_args.seed)]
        with preemption.deferred():  # a signal while sampling: the round's pairs are kept, then the run stops
            if state.is_main_process and not sampled:
                kept, stats = sample_and_keep(model, tokenizer, chosen, rewards, weights, script_args,
                                              training_args.seed + r, tools)
                with open(round_dir / "kept.jsonl", "w") as f:
                    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in kept)
                (round_dir / "sampling.json").write_text(json.dumps(stats))
            state.wait_for_everyone()
            if preemption.agreed(training_args.device):
                raise Preempted(f"preempted ({preemption.requested() or 'a signal on another rank'}) in round {r}: "
                                f"its sampled pairs are saved in {round_dir}; the same command resumes with its "
                                f"training (exit {PREEMPTED_EXIT})")
        kept = [json.loads(line) for line in (round_dir / "kept.jsonl").read_text().splitlines()]
        stats = json.loads((round_dir / "sampling.json").read_text())
        # a checkpoint only when preempted (run.fit), which the rerun resumes from
        args = replace(training_args, output_dir=str(round_dir), save_strategy="no", push_to_hub=False,
                       seed=training_args.seed + r, resume_from_checkpoint=None)
        schemas = {"tools": data.tool_schemas(tools)} if tools else {}  # rendered as sampled
        train = Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"], **schemas}
                                   for row in kept + worked])  # worked_split: gold solutions beside its own
        loss = None
        if len(train):
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
            # learning_rate_groups; a NaN/inf stops the run in one line; preemption saves a checkpoint in round_dir
            result = run.fit(trainer, script_args, checkpoints.to_resume(script_args, args))
            loss = result.training_loss
            trainer.save_model(str(round_dir))
        elif state.is_main_process:
            model.save_pretrained(str(round_dir))  # nothing verified: the next round starts from the same model
        if state.is_main_process:
            tokenizer.save_pretrained(str(round_dir))
            log = {"round": r, **stats, **({"worked": len(worked)} if worked else {}), "train_loss": loss,
                   "minutes": round((time.time() - started) / 60, 2)}
            if recipe.heldout is not None:  # heldout_steps: the round's model on the held-out problems
                log["heldout_accuracy"] = heldout.accuracy(
                    model, tokenizer, recipe.heldout, max_new_tokens=heldout.budget(recipe),
                    batch_size=script_args.sampling_batch_size, tools=tools)
            with open(out / "rounds.jsonl", "a") as f:
                f.write(json.dumps(log) + "\n")
            (round_dir / "round.json").write_text(json.dumps(log))  # last: the round is complete
            print(f"  round {r}/{script_args.rounds}: solved {100 * stats['solved']:.1f}% of {stats['prompts']} "
                  f"prompts ({100 * stats['sampled_correct']:.1f}% of samples right), kept {stats['kept']} pairs"
                  + (f" (mean {stats['mean_kept_tokens']:.1f} tokens), train loss {loss:.4f}" if kept else "")
                  + (f", held-out accuracy {100 * log['heldout_accuracy']:.1f}%" if "heldout_accuracy" in log else "")
                  + f", {log['minutes']:.1f} min", flush=True)
            for checkpoint in round_dir.glob("checkpoint-*"):  # a preempted round's: the round's model is saved
                shutil.rmtree(checkpoint, ignore_errors=True)
        state.wait_for_everyone()
        source = str(round_dir)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return finish(recipe, trainer, result, source)


def finish(recipe, trainer, result, source: str):
    """The final model in output_dir, as every task leaves it (run.finish: model, tokenizer, recipe.yaml,
    metrics, push). When the last round trained here, its trainer finishes; otherwise (resumed with every round
    done, or a last round that kept nothing) the last round's folder is copied."""
    out = Path(recipe.training_args.output_dir)
    if trainer is not None and trainer.args.output_dir == source:
        trainer.args.output_dir = str(out)  # the run's folder, not the round's: run.finish saves and pushes there
        return run.finish(trainer, result, recipe)
    if recipe.training_args.process_index == 0:
        for f in Path(source).iterdir():
            if f.is_file() and f.name not in ("kept.jsonl", "round.json", "sampling.json"):
                shutil.copy(f, out / f.name)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        print(f"saved model + tokenizer + recipe.yaml to {out} (from {source})", flush=True)
    unlock_output_dir(recipe.training_args)
    return {}
