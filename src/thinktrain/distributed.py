"""Multi-process launches on machines without a GPU: make them really run N processes.

accelerate's launchers were built for GPUs, and on a CPU-only box two launches go quietly wrong
(measured):
- MULTI_GPU / torchrun with 2 processes and no GPU: each process builds a single-process state and trains the
  whole dataset alone (two copies, world_size=1). The fix is accelerate's own CPU path (gloo), which the
  launcher enables only for `--cpu`; here ACCELERATE_USE_CPU is set for it.
- DeepSpeed with 2 processes and no GPU: DeepSpeed initialises a 2-process gloo group itself, but accelerate's
  `_prepare_backend` finds no GPU backend, so accelerate counts 1 process while DeepSpeed counts 2 and the batch
  size check fails (`train_batch_size ... 8 != 8 * 1 * 2`). The fix hands accelerate the gloo backend
  DeepSpeed already uses.
- FSDP with no GPU: accelerate switches to FSDP only from a GPU-type distributed state (MULTI_GPU/XPU/NPU/...,
  `AcceleratorState.__init__`); CPU processes are MULTI_CPU, so the FSDP plugin would be dropped and the run
  would be plain DDP under an FSDP config. That is refused in one line instead.
All of this applies only when the launcher started several processes (LOCAL_RANK set) and torch sees no
accelerator, so GPU runs never reach this code.
"""

from __future__ import annotations

import os


def _no_accelerator() -> bool:
    from accelerate.utils import get_torch_accelerator_backend

    return get_torch_accelerator_backend()[0] is None


def prepare_cpu_processes() -> None:
    """Call before the training arguments are parsed (their device is set up once, lazily)."""
    if int(os.environ.get("LOCAL_RANK", -1)) == -1 or not _no_accelerator():
        return
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        from .errors import RecipeError

        raise RecipeError("FSDP needs GPUs: accelerate runs FSDP only on GPU-type devices, and on this CPU-only "
                          "machine the run would silently be plain DDP; use accelerate_configs/multi_cpu.yaml, or "
                          "zero2.yaml / zero3.yaml with --num_processes 2 --mixed_precision no")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        prepare_backend = PartialState._prepare_backend

        def gloo_for_deepspeed(self, cpu=False, sagemaker_dp=False, backend=None):
            found, kind = prepare_backend(self, cpu, sagemaker_dp, backend)
            # DistributedType.NO here only sets the device to the CPU; accelerate switches it to DEEPSPEED next
            return (found, kind) if found is not None else ("gloo", DistributedType.NO)

        PartialState._prepare_backend = gloo_for_deepspeed
    else:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def end_processes() -> None:
    """Tear the process group down once every rank is done saving, then, in a CPU launch, exit at once.
    Left to interpreter shutdown, a rank occasionally aborts in C++ teardown ("terminate called without an active
    exception", exit -6) after the model was written, failing the launch (~1 in 25 2-process ZeRO-3 CPU launches).
    Under DeepSpeed the group is already gone by the time training returns, so the exit must not depend on it.
    os._exit skips that teardown; everything worth keeping is saved and flushed by then."""
    import logging
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if int(os.environ.get("LOCAL_RANK", -1)) != -1 and _no_accelerator():  # a launched worker, never a caller's process
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
