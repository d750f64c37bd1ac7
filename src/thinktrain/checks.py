"""What a recipe's values may be, checked before anything loads: every mistake TRL, transformers or PEFT would find
only after loading the model (or never) is a one-line RecipeError here. What is checked, by family:
docs/recipes.md#mistakes-are-caught-before-anything-loads. recipe.parse calls validate() on every parsed Recipe
(configs.Recipe). Around 450 lines: the
value tables and the checks that read them belong together.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import socket
from pathlib import Path

from .configs import Recipe, evaluating
from .errors import RecipeError, mapping_of, one_line, suggest
from .schema import check_local_source
from .hardware import has_bf16_accelerator

# --------------------------------------------------------------------------- what a value may be
# TRL, transformers and PEFT take any value of a field's type and find many bad ones only after the model loads (an
# empty batch, a division by zero, a logits processor or the loss refusing it) or never (training the wrong way).
# validate checks these tables first. A rule applies when the task has the key and its value is set; the comment
# says whose code rejects the value later, or what goes wrong. (A value the dataclasses' own __post_init__ rejects is
# refused by them, at parse: those checks are not repeated here.)


def _range(low, high=None, low_open=False, high_open=False) -> tuple:
    return low, high, low_open, high_open


POSITIVE, NON_NEGATIVE = _range(0, low_open=True), _range(0)
PROBABILITY, FRACTION = _range(0, 1), _range(0, 1, high_open=True)  # [0, 1], [0, 1)
RANGES = {
    # sizes and counts: 0 is an empty batch, a division by zero, or a loop that never runs
    "per_device_train_batch_size": POSITIVE, "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE, "eval_accumulation_steps": POSITIVE, "num_train_epochs": POSITIVE,
    "max_length": POSITIVE, "max_completion_length": POSITIVE, "max_prompt_length": POSITIVE,
    "max_train_samples": POSITIVE, "max_eval_samples": POSITIVE,
    "min_solve_rate": PROBABILITY, "max_solve_rate": PROBABILITY,  # shares of attempts that solved a problem
    "tool_timeout": POSITIVE, "heldout_steps": POSITIVE, "heldout_problems": POSITIVE, "heldout_max_new_tokens": POSITIVE,  # a loop, a batch
    "heldout_patience": NON_NEGATIVE,  # 0: never stop early
    "dataset_num_proc": POSITIVE,  # datasets' map(num_proc=0) raises
    "generation_batch_size": POSITIVE, "steps_per_generation": POSITIVE,  # GRPOConfig takes 0: no batch to generate
    "num_generations_eval": POSITIVE, "num_iterations": POSITIVE,  # GRPO: 0 updates per generation trains nothing
    "ref_model_sync_steps": POSITIVE, "vllm_tensor_parallel_size": POSITIVE, "vllm_max_model_length": POSITIVE,
    # intervals: save_steps 0 never saves, without a word; eval_steps 0 is read as "every logging_steps"
    "logging_steps": POSITIVE, "save_steps": POSITIVE, "eval_steps": POSITIVE,
    # LoRA: peft's LoraLayer.update_layer raises for r <= 0 once the model is wrapped; the update is scaled by
    # lora_alpha / r, so alpha 0 trains an adapter that changes nothing; torch.nn.Dropout raises outside [0, 1]
    "lora_r": POSITIVE, "lora_alpha": POSITIVE, "lora_dropout": FRACTION,
    # optimizer: torch.optim.AdamW raises for these when the first step builds it; max_grad_norm < 0 turns
    # clipping off without a word (0 does so on purpose); a negative learning rate trains the wrong way
    "learning_rate": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "adam_epsilon": NON_NEGATIVE,
    "adam_beta1": FRACTION, "adam_beta2": FRACTION, "max_grad_norm": NON_NEGATIVE,
    "label_smoothing_factor": FRACTION, "eval_delay": NON_NEGATIVE, "neftune_noise_alpha": NON_NEGATIVE,
    # GRPO: a negative KL coefficient rewards drifting away from the reference model; a negative clipping range
    # inverts the trust region; GRPOConfig documents top_entropy_quantile and ref_model_mixup_alpha in [0, 1]
    "beta": NON_NEGATIVE, "epsilon": NON_NEGATIVE, "epsilon_high": NON_NEGATIVE,
    "top_entropy_quantile": PROBABILITY, "ref_model_mixup_alpha": PROBABILITY,
    "vllm_gpu_memory_utilization": _range(0, 1, low_open=True),  # a share of the GPU's memory
    # sampling: transformers' logits processors (generation/logits_process.py) raise when generation starts;
    # top_p 0 would make every completion of a group the same (vLLM refuses it outright); top_k 0 turns it off
    "temperature": POSITIVE, "top_p": _range(0, 1, low_open=True), "min_p": PROBABILITY, "top_k": NON_NEGATIVE,
    "repetition_penalty": POSITIVE,
    # not quantities: numpy.random.seed takes [0, 2**32 - 1]; torch's DataLoader raises for negative workers
    "seed": _range(0, 2**32 - 1), "data_seed": _range(0, 2**32 - 1), "dataloader_num_workers": NON_NEGATIVE,
    "vllm_server_port": _range(1, 65535), "vllm_group_port": _range(1, 65535), "vllm_server_timeout": POSITIVE,
    "ddp_timeout": POSITIVE,
}

# Strings that TRL types as plain `str` and rejects only in the training loop (or, for vLLM's, when it starts).
GRPO_CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),  # GRPOTrainer._compute_loss
    "scale_rewards": ("group", "batch", "none"),  # GRPOTrainer._generate_and_score_completions (true/false mapped)
    "importance_sampling_level": ("token", "sequence"),  # GRPOTrainer._compute_loss
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),  # GRPOTrainer
    "vllm_mode": ("colocate", "server"),  # trl.generation.vllm_generation.VLLMGeneration
    "vllm_model_impl": ("vllm", "transformers"),  # GRPOConfig's help; vLLM's model_impl
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
}
CHOICES = {
    "torch_compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),  # torch.compile
}


def validate(recipe: Recipe, check_model: bool = True):
    """Checks TRL would only make after loading the model (or never): fail now, in one line. What is checked, by
    family: docs/recipes.md#mistakes-are-caught-before-anything-loads."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    if not model_args.model_name_or_path:
        raise RecipeError("model_name_or_path is missing: set it in the recipe or pass --model_name_or_path")
    if getattr(script_args, "dataset_mixture", None) is not None:
        from . import mixture

        if script_args.dataset_name:
            raise RecipeError("dataset_name and dataset_mixture are both set: keep one (a mixture names its datasets "
                              "in its own `id:` lines)")
        script_args.dataset_mixture = mixture.check(script_args.dataset_mixture)
    elif not script_args.dataset_name:
        raise RecipeError("dataset_name is missing: a hub id, a local .jsonl/.json/.parquet/.csv file or folder, "
                          "or synthetic:gsm8k (or several datasets as a dataset_mixture)")
    check_values(recipe)
    script_args.learning_rate_groups = check_learning_rate_groups(script_args.learning_rate_groups)
    if (script_args.learning_rate_groups and training_args.learning_rate == 0
            and not any(script_args.learning_rate_groups.values())):
        raise RecipeError("learning_rate_groups: every parameter has learning rate 0, so nothing would train; "
                          "give learning_rate or a group a positive rate")
    if recipe.task in ("grpo", "rft"):
        check_rewards(recipe)
        weights = getattr(training_args, "reward_weights", None)  # GRPOConfig's (rft checks its own)
        if weights is not None and len(weights) != len(script_args.reward_funcs):
            raise RecipeError(
                f"reward_weights has {len(weights)} values but reward_funcs has {len(script_args.reward_funcs)} "
                f"({', '.join(script_args.reward_funcs)}): give one weight per reward"
            )
    if script_args.tools is not None:
        check_tools(recipe)
    check_packages(recipe)
    check_combinations(recipe)
    check_with_libraries(recipe)
    check_paths(recipe)
    if script_args.dataset_name:
        check_source("dataset_name", script_args.dataset_name, repo_type="dataset")
    for i, entry in enumerate((getattr(script_args, "dataset_mixture", None) or {}).get("datasets", [])):
        check_source(f"dataset_mixture.datasets[{i}].id", entry["id"], repo_type="dataset")
    if training_args.push_to_hub:  # seconds now, not a failed push after hours of training
        from .hub import preflight

        training_args.hub_model_id = preflight(training_args)  # namespace/name, as the checks resolved it
    if check_model:
        check_source("model_name_or_path", model_args.model_name_or_path, repo_type="model")
        check_model_structure(recipe)


def value_of(recipe: Recipe, key: str):
    """The value of `key` in the task's dataclasses (None where the task has no such key)."""
    for args in (recipe.script_args, recipe.training_args, recipe.model_args):
        if key in {f.name for f in dataclasses.fields(args)}:
            value = getattr(args, key)
            return getattr(value, "value", value)  # enums -> their string
    return None


def _describe(rule: tuple) -> str:
    low, high, low_open, high_open = rule
    if high is None:
        return "a positive number" if low == 0 and low_open else "a non-negative number" if low == 0 else \
            f"a number {'>' if low_open else '>='} {low}"
    return f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_values(recipe: Recipe):
    """RANGES, CHOICES and GRPO_CHOICES; the sets transformers itself keeps (cache and attention implementations)."""
    for key in sorted(RANGES, key=lambda k: k not in recipe.keys):  # the keys set first, then derived ones
        rule, value = RANGES[key], value_of(recipe, key)
        low, high, low_open, high_open = rule
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value < low or (low_open and value == low) or (high is not None and (value > high or (
                high_open and value == high))):
            raise RecipeError(f"{key}: expected {_describe(rule)}, got {value!r}; fix it, or remove the key for the "
                              f"default")
    training_args = recipe.training_args
    if recipe.task == "grpo" and str(training_args.scale_rewards).lower() in ("true", "false"):
        # GRPOConfig maps the documented booleans true/false to group/none, but a YAML or command-line value
        # arrives as the string "True"/"False", which it keeps, and the trainer refuses mid-run
        training_args.scale_rewards = "group" if str(training_args.scale_rewards).lower() == "true" else "none"
    for key, allowed in {**CHOICES, **(GRPO_CHOICES if recipe.task == "grpo" else {})}.items():
        _check_choice(recipe, key, allowed)
    if getattr(training_args, "cache_implementation", None) is not None:
        from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS

        _check_choice(recipe, "cache_implementation", ALL_CACHE_IMPLEMENTATIONS)  # GenerationConfig.validate
    if "torch_compile_backend" in recipe.keys and training_args.torch_compile_backend is not None:
        from torch._dynamo import list_backends  # (seconds to import: only when the recipe names a backend)

        _check_choice(recipe, "torch_compile_backend", list_backends(exclude_tags=()))  # torch.compile raises
    attention = recipe.model_args.attn_implementation
    if attention is not None and "/" not in attention:  # org/repo: a kernel from the Hub
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        # PreTrainedModel.get_correct_attn_implementation, when the model loads ("paged|" is a deprecated prefix)
        known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
        if attention.removeprefix("paged|") not in known:
            _check_choice(recipe, "attn_implementation", known)


def _check_choice(recipe: Recipe, key: str, allowed):
    value = value_of(recipe, key)
    if value is not None and value not in allowed:
        raise RecipeError(f"{key}: '{value}' is not one of: {', '.join(allowed)}; pick one, or remove the key for "
                          f"the default")


def check_rewards(recipe: Recipe):
    """Every reward name of reward_funcs resolved once, into recipe.rewards; the unknown ones named together, like
    the keys of a ported recipe."""
    from .rewards import UnknownRewardError, resolve_reward

    names = recipe.script_args.reward_funcs
    if not names:
        raise RecipeError("reward_funcs is empty: name at least one reward, e.g. [accuracy, format]")
    wrong, resolved = {}, []
    for name in names:
        try:
            resolved.append(resolve_reward(name))
        except UnknownRewardError as e:
            wrong[name] = str(e)
    if len(wrong) == 1:
        raise RecipeError(next(iter(wrong.values())))
    if wrong:
        raise RecipeError("\n".join([f"{len(wrong)} of reward_funcs' names need changing:",
                                     *(f"  {why}" for why in wrong.values())]))
    recipe.rewards = resolved


def check_tools(recipe: Recipe):
    """Each tool importable, typed and documented (transformers' get_json_schema, which TRL uses), resolved once
    into recipe.tools; sft needs the calculator or python, which its data's annotations call (data.annotation_tool)."""
    from .tools import load_tools

    names = recipe.script_args.tools
    if not names:
        raise RecipeError("tools is empty: name at least one tool (e.g. [calculator]), or remove the key")
    recipe.tools = load_tools(names, recipe.script_args.tool_timeout, recipe.script_args.python_sandbox)
    if recipe.task == "sft" and not {"calculator", "python"} & set(names):
        raise RecipeError("tools: sft turns the data's <<expr=result>> annotations into calculator or python calls; "
                          "add calculator or python to tools")


def check_combinations(recipe: Recipe):
    """Values that are fine alone and fail together, after the model loads (or never do what they say)."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    peft, scratch = model_args.use_peft, model_args.model_name_or_path.startswith("scratch:")
    low, high = getattr(script_args, "min_solve_rate", None), getattr(script_args, "max_solve_rate", None)
    if low is not None and high is not None and low > high:
        raise RecipeError(f"min_solve_rate {low:g} is above max_solve_rate {high:g}: no problem can be kept; "
                          f"swap them")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not peft:
        # transformers' Trainer refuses to train a quantized model without adapters
        bits = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
        raise RecipeError(f"{bits}: a quantized model trains only through LoRA adapters; set use_peft: true, or "
                          f"{bits}: false")
    if script_args.heldout_steps and recipe.task == "pretrain":
        raise RecipeError("heldout_steps: held-out accuracy needs problems with gold answers; task pretrain reads raw "
                          "text (evaluate the checkpoints with `thinktrain eval`, or remove the key)")
    for key in ("heldout_keep_best", "heldout_patience"):
        if getattr(script_args, key) and not script_args.heldout_steps:
            raise RecipeError(f"{key}: needs heldout_steps (how often to measure held-out accuracy); add "
                              f"heldout_steps: 25, or remove {key}")
        if getattr(script_args, key) and recipe.task == "rft":
            raise RecipeError(f"{key}: expert iteration evaluates after each round and keeps its last round; choose "
                              f"the number of rounds instead, or remove {key}")
    if script_args.heldout_steps and (sharded := _sharded_weights(training_args)):
        # heldout.py: the main process generates alone; sharded weights need every rank in each forward
        raise RecipeError(f"heldout_steps: held-out accuracy generates on the main process, which {sharded} does not "
                          f"allow (each forward gathers the weights from every rank); evaluate the checkpoints with "
                          f"`thinktrain eval`, or launch with DDP or ZeRO-2")
    if recipe.task == "grpo":  # GRPOConfig's keys (rft's trainer config is SFTConfig)
        if training_args.beta > 0 and scratch and not peft:
            # GRPOTrainer builds its reference model with from_pretrained(the model's name); a scratch model has none
            raise RecipeError(f"beta: {training_args.beta:g} needs a reference model that GRPO loads by name, and "
                              f"{model_args.model_name_or_path} is built in memory; set beta: 0, or start from a saved "
                              f"checkpoint (model_name_or_path: runs/tiny/sft)")
        if training_args.sync_ref_model and (training_args.beta == 0 or peft):
            # GRPOTrainer.__init__: there is no separate reference model to sync
            why = "beta is 0, so there is no reference model" if training_args.beta == 0 else \
                "with use_peft the reference model is the base model with the adapter off"
            raise RecipeError(f"sync_ref_model: true, but {why}; set sync_ref_model: false")
        if (training_args.loss_type == "vespo" and training_args.use_vllm
                and training_args.vllm_importance_sampling_correction
                and training_args.vllm_importance_sampling_mode not in ("token_truncate", "token_mask")):
            raise RecipeError("loss_type: vespo with vLLM needs vllm_importance_sampling_mode: token_truncate or "
                              "token_mask")  # GRPOTrainer.__init__
    if recipe.task != "grpo" and training_args.padding_free and not training_args.packing \
            and training_args.max_length is not None:
        # SFTTrainer.__init__: without packing, padding-free batches would not be cut to max_length
        raise RecipeError("padding_free: true without packing would not enforce max_length; set packing: true, or "
                          "max_length: null")
    if script_args.dataset_streaming and training_args.max_steps <= 0:
        # the Trainer needs the length of an epoch, which a stream does not have
        raise RecipeError("dataset_streaming: true needs max_steps (a stream has no length to count epochs in)")
    save = str(getattr(training_args.save_strategy, "value", training_args.save_strategy))
    if save == "best" and not evaluating(training_args):
        raise RecipeError("save_strategy: best keeps the checkpoint with the best evaluation, but eval_strategy is "
                          "no; set eval_strategy: steps (or epoch), or another save_strategy")
    if save == "best" and training_args.metric_for_best_model is None:
        # transformers' Trainer.__init__
        raise RecipeError("save_strategy: best needs metric_for_best_model (e.g. loss); set it, or another "
                          "save_strategy")


# optimizers that need no package beyond torch and transformers
_PLAIN_OPTIMIZERS = {"adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"}


def check_packages(recipe: Recipe):
    """Features that need a package (or an NVIDIA GPU) this machine does not have."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    for key, on, package, install in (
        ("use_vllm", getattr(training_args, "use_vllm", False), "vllm", "'thinktrain[vllm]'"),
        ("load_in_4bit", model_args.load_in_4bit, "bitsandbytes", "'thinktrain[qlora]'"),
        ("load_in_8bit", model_args.load_in_8bit, "bitsandbytes", "'thinktrain[qlora]'"),
        ("use_liger_kernel", training_args.use_liger_kernel, "liger_kernel", "liger-kernel"),
    ):
        if on and importlib.util.find_spec(package) is None:
            raise RecipeError(f"{key}: true needs {package}, which is not installed; pip install {install} or pass "
                              f"--{key} false")
    if model_args.load_in_4bit and (evaluating(training_args) or script_args.heldout_steps) \
            and (training_args.use_cpu or not has_bf16_accelerator()):
        # measured: after an eval-mode forward, CPU 4-bit training crashes (Qwen2) or computes wrong gradients
        # without an error (Llama); 8-bit is unaffected
        raise RecipeError("load_in_4bit on CPU: bitsandbytes 4-bit training breaks after an evaluation (eval-mode "
                          "forward); set eval_strategy: no and no heldout_steps, or use load_in_8bit on CPU")
    attention = model_args.attn_implementation or ""
    if attention.startswith("flash_attention") and not model_args.model_name_or_path.startswith("scratch:"):
        import torch

        if training_args.use_cpu or not torch.cuda.is_available():
            raise RecipeError(f"attn_implementation: {attention} needs an NVIDIA GPU; use sdpa here (or remove the "
                              f"key)")
    if training_args.report_to:  # [] for none; transformers' Trainer raises for a tracker that is not installed
        from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

        available = get_available_reporting_integrations()
        for name in training_args.report_to:
            if name not in INTEGRATION_TO_CALLBACK:
                raise RecipeError(f"report_to: '{name}' is not one of: none, all, "
                                  f"{', '.join(INTEGRATION_TO_CALLBACK)}; fix it, or report_to: none")
            if name not in available:
                raise RecipeError(f"report_to: {name} is not installed; pip install {name.replace('_', '-')}, or "
                                  f"report_to: none")


def check_with_libraries(recipe: Recipe):
    """The checks that PEFT's, bitsandbytes' and transformers' own constructors make, made now on the recipe's
    values instead of after the model loads (LoraConfig, BitsAndBytesConfig, the scheduler, the optimizer)."""
    training_args, model_args = recipe.training_args, recipe.model_args
    if model_args.use_peft:
        from trl import get_peft_config

        lora = sorted((f.name for f in dataclasses.fields(model_args) if f.name.startswith("lora_")), key=len)[::-1]
        _library_check(lambda: get_peft_config(model_args), [*lora, "use_dora", "use_rslora"])
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from trl import get_quantization_config

        _library_check(lambda: get_quantization_config(model_args),
                       ["bnb_4bit_quant_storage", "bnb_4bit_quant_type", "use_bnb_nested_quant", "load_in_4bit"])
    scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    if training_args.lr_scheduler_kwargs or scheduler in ("cosine_with_min_lr", "cosine_warmup_with_min_lr",
                                                          "warmup_stable_decay"):  # those need kwargs
        import torch
        from transformers import get_scheduler

        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training_args.learning_rate or 1e-3)
        _library_check(lambda: get_scheduler(scheduler, optimizer, num_warmup_steps=0, num_training_steps=100,
                                             scheduler_specific_kwargs=training_args.lr_scheduler_kwargs),
                       [f"lr_scheduler_kwargs (for lr_scheduler_type {scheduler})"])
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    if optim not in _PLAIN_OPTIMIZERS:  # the others need a package (bitsandbytes, torchao, galore, ...)
        from transformers import Trainer

        _library_check(lambda: Trainer.get_optimizer_cls_and_kwargs(training_args), [f"optim {optim}"],
                       model_free=True)


def _library_check(check, keys: list[str], model_free: bool = False):
    """Run a library's own check of these keys' values; a refusal becomes one line led by the key it is about (the
    first of `keys` its message names, as is or as words: lora_task_type is "task type"), else by keys[0]."""
    try:
        check()
    except (ValueError, TypeError, ImportError) as e:
        if model_free and "model" in str(e).lower() and not isinstance(e, ImportError):
            return  # needs the model itself (GaLore's target modules): checked when it loads
        text = one_line(e)
        named = (k for k in keys if k in text or re.search(rf"\b{k.split('_', 1)[-1].replace('_', ' ')}\b",
                                                               text.lower()))
        raise RecipeError(f"{next(named, keys[0])}: {text}") from None


def check_model_structure(recipe: Recipe):
    """LoRA's target modules and modules_to_save and the learning-rate-group patterns, checked against the model's
    own module and parameter names (models.skeleton: built on the meta device, no weight read), so a typo stops
    here and not in a PEFT traceback after the weights loaded (or, for modules_to_save, never)."""
    script_args, model_args = recipe.script_args, recipe.model_args
    if not (model_args.use_peft or script_args.learning_rate_groups):
        return
    from .models import skeleton

    model = skeleton(model_args, recipe.training_args)
    if model is None:
        return  # no config to read: loading the model says why
    modules = [name for name, _ in model.named_modules() if name]
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if type(m).__name__ == "Linear"})
    if model_args.use_peft:
        targets = model_args.lora_target_modules or []
        if isinstance(targets, str) and targets != "all-linear":  # one string is a regex, matched whole (PEFT)
            if not any(re.fullmatch(targets, name) for name in modules):
                raise RecipeError(f"lora_target_modules: '{targets}' (one string: a regex of whole module names) "
                                  f"matches no module of {model_args.model_name_or_path}{suggest(targets, linear)}; "
                                  f"its linear layers: {', '.join(linear)} (or all-linear)")
            targets = []
        for key in [] if targets in ("all-linear", ["all-linear"]) else targets:
            if not any(name == key or name.endswith("." + key) for name in modules):  # PEFT's rule for a list
                raise RecipeError(f"lora_target_modules: '{key}' is no module of {model_args.model_name_or_path}"
                                  f"{suggest(key, linear)}; its linear layers: {', '.join(linear)} (or all-linear)")
        for key in model_args.lora_modules_to_save or []:
            if not any(name.endswith(key) for name in modules):  # PEFT's rule for modules_to_save
                tops = sorted({name.rsplit(".", 1)[-1] for name in modules if not name.rsplit(".", 1)[-1].isdigit()})
                raise RecipeError(f"lora_modules_to_save: '{key}' is no module of {model_args.model_name_or_path}"
                                  f"{suggest(key, tops)}; module names end in: {', '.join(tops)}")
        import warnings

        import torch
        from peft import get_peft_model
        from trl import get_peft_config

        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its advice on the real model is printed when that loads
                model = get_peft_model(model, get_peft_config(model_args))
        except Exception:  # noqa: BLE001 (anything else PEFT refuses it says when the model loads, as before)
            return
    if script_args.learning_rate_groups:
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        for pattern in script_args.learning_rate_groups:
            if not any(re.search(pattern, name) for name in trainable):
                raise RecipeError(f"learning_rate_groups: '{pattern}' matches no trainable parameter (names look "
                                  f"like {', '.join(trainable[-3:])})")


def check_paths(recipe: Recipe):
    """Files and folders the trainer would write to or read from after loading."""
    script_args, training_args = recipe.script_args, recipe.training_args
    out = Path(training_args.output_dir).expanduser()
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"is inside {parent}, a file"
                raise RecipeError(f"output_dir: {out} {where}; choose a folder path (--output_dir runs/NAME)")
            if not os.access(parent, os.W_OK):
                raise RecipeError(f"output_dir: {out} cannot be created or written ({parent} is not writable); "
                                  f"choose a folder you can write")
            break
    resume = training_args.resume_from_checkpoint
    if resume:
        if resume.lower() in ("true", "false"):
            raise RecipeError(f"resume_from_checkpoint: give a checkpoint folder, not {resume}; a rerun resumes "
                              f"from output_dir's newest checkpoint by itself (auto_resume: true)")
        path = Path(resume).expanduser()
        if not path.is_dir():
            raise RecipeError(f"resume_from_checkpoint: no such folder: {resume}; give a checkpoint folder, e.g. "
                              f"{out}/checkpoint-500, or remove the key (auto_resume finds the newest)")
        if not (path / "trainer_state.json").is_file():
            raise RecipeError(f"resume_from_checkpoint: {resume} is not a complete checkpoint (no "
                              f"trainer_state.json); give a checkpoint-N folder that has one")
        from .checkpoints import torn

        why = torn(path)  # truncated or unreadable since it was saved
        if why:
            raise RecipeError(f"resume_from_checkpoint: {resume} is torn: {why}; give an earlier checkpoint")
    template = getattr(training_args, "chat_template_path", None)
    if template and (template.endswith((".jinja", ".j2")) or template.startswith((".", "/", "~"))) \
            and not Path(template).expanduser().exists():
        raise RecipeError(f"chat_template_path: no such file or folder: {template}")
    tokenizer = getattr(script_args, "tokenizer_name_or_path", None)
    if tokenizer:
        check_source("tokenizer_name_or_path", tokenizer, repo_type="model")


def check_learning_rate_groups(groups) -> dict[str, float] | None:
    """`learning_rate_groups` as {regex: lr}, from the recipe's mapping or a CLI JSON string."""
    key = "learning_rate_groups"
    if groups is None or groups == {}:
        return None
    groups = mapping_of(groups, key, "a JSON mapping like '{\"model\\\\.norm\\\\.weight$\": 0.01}'")
    if not isinstance(groups, dict):
        raise RecipeError(f"{key}: expected a mapping of parameter-name regex: learning rate, got {groups!r}")
    out = {}
    for pattern, lr in groups.items():
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise RecipeError(f"{key}: '{pattern}' is not a valid regex ({e})") from None
        try:
            rate = None if isinstance(lr, bool) else float(lr)  # YAML reads 1e-2 as a string, like any lr
        except (TypeError, ValueError):
            rate = None
        if rate is None:
            raise RecipeError(f"{key}: the learning rate for '{pattern}' must be a number, got {lr!r}")
        if not rate >= 0:
            raise RecipeError(f"{key}: the learning rate for '{pattern}' must be non-negative, got {lr!r}")
        out[str(pattern)] = rate
    return out


def check_source(key: str, value: str, repo_type: str):
    """A local path must exist; a hub id must be reachable (or cached) — say so now, not after 48 s of retries."""
    if not check_local_source(key, value):
        return
    if _hub_cached(value, repo_type):
        return
    from huggingface_hub import is_offline_mode

    offline = is_offline_mode()
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached"
        raise RecipeError(f"{key}: '{value}' is a Hugging Face Hub id, but {why} and it is not in the local cache; "
                          f"pass a local path (--{key.lstrip('-')} PATH) or go online")


def _hub_cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    filename = "config.json" if repo_type == "model" else "README.md"
    return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)


def _hub_reachable() -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT")):
        return True  # behind a proxy or mirror a direct probe proves nothing; let the real request decide
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _sharded_weights(training_args) -> str | None:
    """'DeepSpeed ZeRO-3' or 'FSDP' when the launch shards the weights across ranks (accelerate's launch settings
    in the environment, or the recipe's own deepspeed / fsdp keys), else None."""
    if training_args.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    config = training_args.deepspeed
    if isinstance(config, str) and Path(config).is_file():
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError):
            config = None
    if isinstance(config, dict):
        stage = (config.get("zero_optimization") or {}).get("stage", stage)
    return "DeepSpeed ZeRO-3" if str(stage) == "3" else None

