"""Keys that recipes written for older TRL, transformers 4 or open-r1 still carry, and what each became: read by
recipe.py to name every key a ported recipe must change in one error. Data only."""

# Keys old recipes (TRL 0.x, transformers 4, open-r1) still carry. RENAMED: old key -> the key that replaced it, as
# "use ..." completes it; REMOVED: old key -> what to do instead. Each checked against the installed TRL 1.16 /
# transformers 5 dataclasses (none of these old keys is a field there); the source of each is on its line.
RENAMED = {
    "torch_dtype": "dtype",  # TRL ModelConfig (<= 0.24)
    "warmup_ratio": "warmup_steps (a float < 1 is a ratio of the total steps)",  # transformers 4 TrainingArguments
    "max_seq_length": "max_length",  # TRL SFTConfig (<= 0.19)
    "evaluation_strategy": "eval_strategy",  # transformers 4 (<= 4.45)
    "no_cuda": "use_cpu",  # transformers 4
    "per_gpu_train_batch_size": "per_device_train_batch_size",  # transformers 4
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",  # transformers 4
    "group_by_length": "train_sampling_strategy: group_by_length",  # transformers 4
    "adafactor": "optim: adafactor",  # transformers 4
    "torchdynamo": "torch_compile_backend",  # transformers 4
    "include_inputs_for_metrics": "include_for_metrics: [inputs]",  # transformers 4
    "include_tokens_per_second": "include_num_input_tokens_seen: true (train_tokens_per_second comes with it)",
    "push_to_hub_model_id": "hub_model_id",  # transformers 4
    "push_to_hub_organization": "hub_model_id: ORG/NAME",  # transformers 4
    "push_to_hub_token": "hub_token (or HF_TOKEN in the environment)",  # transformers 4
    "fsdp_min_num_params": "fsdp_config: {min_num_params: N}",  # transformers 4
    "fsdp_transformer_layer_cls_to_wrap": "fsdp_config: {transformer_layer_cls_to_wrap: [CLASS]}",  # transformers 4
    "dispatch_batches": "accelerator_config: {dispatch_batches: ...}",  # transformers 4 (<= 4.44)
    "split_batches": "accelerator_config: {split_batches: ...}",  # transformers 4 (<= 4.44)
    "gradient_checkpointing_use_reentrant": "gradient_checkpointing_kwargs: {use_reentrant: ...}",  # TRL ScriptArgs
    "use_liger": "use_liger_kernel",  # TRL SFTConfig (<= 0.16)
    "use_liger_loss": "use_liger_kernel",  # TRL GRPOConfig (0.19 - 0.24)
    "vllm_guided_decoding_regex": "vllm_structured_outputs_regex",  # TRL GRPOConfig (<= 0.24)
    "vllm_max_model_len": "vllm_max_model_length",  # TRL GRPOConfig (0.16)
    "wandb_log_unique_prompts": "log_unique_prompts",  # TRL GRPOConfig (0.19 - 0.24), open-r1
    "hub_model_revision": "hub_revision (the branch the final model is pushed to)",  # open-r1
    "dataset_prompt_column": "prompt_column",  # open-r1 GRPOScriptArguments
    "push_to_hub_revision": "push_revisions (on by default with push_to_hub: each checkpoint to its own branch)",
    "max_completion_len": "overlong_max_length (with reward overlong)",  # open-r1's soft_overlong_punishment
    "soft_punish_cache": "overlong_buffer (with reward overlong)",  # open-r1's soft_overlong_punishment
    "chat_template": "chat_template_path (a .jinja file or a tokenizer folder)",  # open-r1 SFT/GRPOConfig; TRL SFT
}
REMOVED = {
    # transformers 4 TrainingArguments
    "overwrite_output_dir": "delete it (output_dir is reused, and a checkpoint there is resumed; auto_resume: false "
                            "starts over)",
    "logging_dir": "delete it (logs go to output_dir; for tensorboard set TENSORBOARD_LOGGING_DIR in the env: block)",
    "save_safetensors": "delete it (checkpoints are always safetensors)",
    "use_mps_device": "delete it (Apple's MPS is used when present; use_cpu: true avoids it)",
    "fp16_backend": "delete it (fp16/bf16 run through torch autocast)",
    "half_precision_backend": "delete it (fp16/bf16 run through torch autocast)",
    "fp16_opt_level": "delete it (apex is gone; fp16/bf16 run through torch autocast)",
    "jit_mode_eval": "delete it (see torch_compile)",
    "use_ipex": "delete it (Intel CPUs need nothing extra)",
    "tpu_num_cores": "delete it (set the processes with accelerate launch)",
    "tpu_metrics_debug": "delete it",
    "past_index": "delete it",
    "mp_parameters": "delete it",
    "ray_scope": "delete it",
    "use_legacy_prediction_loop": "delete it",
    # TRL 0.x SFTConfig / GRPOConfig
    "dataset_batch_size": "delete it (see dataset_num_proc)",
    "num_of_sequences": "delete it (packing: true packs into max_length blocks)",
    "chars_per_token": "delete it (packing counts tokens, not characters)",
    "vllm_device": "delete it; choose vllm_mode: colocate (vLLM on the training GPUs) or server (trl vllm-serve)",
    "vllm_dtype": "delete it (vLLM loads the model in its own dtype)",
    "vllm_enable_prefix_caching": "delete it",
    # open-r1's own keys (its configs.py), which thinktrain does not have
    "benchmarks": "delete it; after training, run thinktrain eval --model OUTPUT_DIR (docs/evaluation.md)",
    "callbacks": "delete it (with push_to_hub, push_revisions, on by default, pushes each checkpoint to a branch)",
    "overwrite_hub_revision": "delete it",
    "wandb_entity": "set WANDB_ENTITY in the recipe's env: block",
    "wandb_project": "set WANDB_PROJECT in the recipe's env: block",
    "wandb_run_group": "set WANDB_RUN_GROUP in the recipe's env: block",
    "code_language": "delete it (thinktrain has no code-execution rewards; name yours as my_pkg.my_mod:my_reward)",
    "code_eval_test_batch_size": "delete it (thinktrain has no code-execution rewards)",
    "code_eval_scoring_mode": "delete it (thinktrain has no code-execution rewards)",
    "parallel_code_exec_per_proc": "delete it (thinktrain has no code-execution rewards)",
    "code_provider": "delete it (thinktrain has no code-execution rewards)",
    "ioi_provider": "delete it (thinktrain has no code-execution rewards)",
    "e2b_router_url": "delete it (thinktrain has no code-execution rewards)",
    "morph_router_url": "delete it (thinktrain has no code-execution rewards)",
    "enforce_same_language": "delete it (thinktrain has no code-execution rewards)",
    # chat_template where the task has no chat_template_path (GRPO reads the model's own template)
    "chat_template": "put the template in the model folder (chat_template.jinja) and point model_name_or_path there",
}
