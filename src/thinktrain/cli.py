"""Command line: `thinktrain train RECIPE.yaml [--key value ...]`, `thinktrain eval ...`, `thinktrain report DIR`,
`thinktrain merge ADAPTER OUT`
(also `python -m thinktrain`; src/train.py runs `train`)."""

from __future__ import annotations

import logging
import sys
import warnings

# TRL 1.x defaults `gradient_checkpointing`, which transformers 5 deprecated: every run would warn about a key
# the user never wrote. Drop that one warning (remove once TRL moves to `activation_checkpointing`).
warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
# Importing TRL's configs imports peft, which imports bitsandbytes; on CPUs with AVX512-BF16 its CPU backend then
# tries to fetch a kernel from the Hub and logs two lines when it can't ("Failed to load CPU gemm_4bit_forward from
# kernels-community"), on every start, quantized or not. That is a speed hint for 4-bit CPU runs, not an error:
# raise its logger's level (the standard logging seam) before anything imports bitsandbytes, so a refused recipe
# prints its one line only.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# kernels (transformers' hub-kernel loader, >= 0.19) warns at every offline start that it skips the publisher trust
# check of the kernel bitsandbytes asks for ("Skipping publisher trust check for 'kernels-community/...'"). Offline is
# the user's choice and no kernel is fetched; the same seam quiets it. Its refusals (untrusted publisher) still raise.
logging.getLogger("kernels._internals.hf_hub").setLevel(logging.ERROR)
# DeepSpeed (imported by transformers wherever it is installed) warns "Setting accelerator to CPU. If you have GPU..."
# at every start on a machine without one; the run header already says where it runs. Its logger resets its level
# when deepspeed creates it, so a filter (which that keeps) drops that one message.
logging.getLogger("DeepSpeed").addFilter(lambda record: not record.getMessage().startswith("Setting accelerator to CPU"))

USAGE = """usage: thinktrain train RECIPE.yaml [--key value ...]
       thinktrain eval --model PATH --dataset NAME_OR_FILE [--split test] [--limit N] [--num_samples k] ...
       thinktrain report OUTPUT_DIR
       thinktrain pipeline [--out runs/demo] [--seed N] [--practice grpo|rft|rft,grpo]
       thinktrain merge ADAPTER_DIR OUT_DIR

  train     run a recipe (task: pretrain | sft | grpo | rft); every recipe key can be overridden as --key value
            e.g. thinktrain train recipes/tiny/sft.yaml --max_steps 5 --output_dir runs/try
  eval      generate answers to held-out problems and score them (pass@1; pass@k, maj@k with --num_samples k)
            e.g. thinktrain eval --model runs/tiny/sft --dataset synthetic:gsm8k --limit 200 --output eval.json
            (thinktrain eval --help lists every option; see docs/evaluation.md)
  pipeline  pretrain -> SFT -> practice (recipes/demo) with a held-out evaluation after each stage; make demo runs it
  merge     fold a LoRA adapter (a use_peft run's output_dir) into its base model -> a full model + tokenizer
  report    OUTPUT_DIR/report.md + PNG curves from the stages' trainer_state.json and OUTPUT_DIR/results.json
"""


def fail(message: str, code: int = 2, everywhere: bool = True) -> int:
    """Print the one line. In a launch, a fault every rank meets alike (a recipe mistake, a NaN, preemption) is
    printed by rank 0 alone: one line per run, not one per process; one a rank meets alone names its rank."""
    import os

    from .errors import redact

    rank = int(os.environ.get("RANK", "0") or 0)
    if rank and everywhere:
        return code
    where = f"rank {rank}: " if rank else ""
    # a message may quote the command line (e.g. a stray argument), which may hold a token
    print(f"thinktrain: error: {where}{redact(message)}", file=sys.stderr, flush=True)
    return code


def train(argv: list[str]) -> int:
    from .schema import precheck

    precheck(argv)  # a mistake the recipe's text shows is answered now, before TRL and torch are imported
    from . import preemption, tasks
    from .distributed import end_processes, prepare_cpu_processes
    from .recipe import parse

    preemption.install()  # SIGTERM/SIGUSR1: checkpoint at the step reached, exit 75 (docs/scaling.md)
    prepare_cpu_processes()  # several launched processes on a GPU-less machine: make them one gloo group
    tasks.run(parse(argv))
    end_processes()
    return 0


def evaluate(argv: list[str]) -> int:
    from .evaluation import main

    return main(argv)


def report(argv: list[str]) -> int:
    from .report import main

    return main(argv)


def pipeline(argv: list[str]) -> int:
    from . import preemption
    from .pipeline import main

    preemption.install()  # a stage preempted: its checkpoint, exit 75; the rerun skips the stages done
    return main(argv)


def merge(argv: list[str]) -> int:
    from .merge import main

    return main(argv)


# command -> function(argv) -> exit code; each imports its module only when it runs
COMMANDS = {"train": train, "eval": evaluate, "report": report, "pipeline": pipeline, "merge": merge}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)  # no command is a mistake: stderr, exit 2
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command '{command}'; commands: {', '.join(COMMANDS)}")
    from .errors import RecipeError, RunError

    try:
        return COMMANDS[command](rest)
    except RecipeError as e:  # every input mistake, from any command: one line, exit 2
        return fail(str(e))
    except RunError as e:  # a fault during a run (NaN loss, output_dir in use): one line, exit 1 like any failed run
        return fail(str(e), code=e.exit_code, everywhere=e.everywhere)  # (preempted: 75, "requeue me")


if __name__ == "__main__":
    sys.exit(main())
