"""Every recipe dataclass: the keys a recipe may set, with their types, defaults and help.

A recipe's keys are the fields of three dataclasses chosen by its task (`dataclass_types`): thinktrain's
arguments (TRL's ScriptArguments plus the fields below), the trainer's config (TRL's SFTConfig / GRPOConfig, or
PretrainConfig) and TRL's ModelConfig. `thinktrain eval`'s options are EvalArguments. `Recipe` (at the end) is
what recipe.parse returns: those three, the keys the user set, and the tools and rewards resolved once. Nothing
here loads data or models; checks that need only the values themselves run in __post_init__ (a ValueError,
reported as one line).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import yaml
from trl import GRPOConfig, ModelConfig, ScriptArguments, SFTConfig

from .errors import TASKS, is_secret, suggest
from .tokenizer import MIN_VOCAB


def evaluating(training_args) -> bool:
    """Whether the trainer will evaluate during training (eval_strategy is an enum or its string)."""
    return str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"


# --------------------------------------------------------------------------- every task


@dataclass
class RecipeArguments(ScriptArguments):
    """thinktrain's own keys, shared by every task (ScriptArguments brings dataset_name/config/splits)."""

    task: str = field(default="sft", metadata={"help": "Which trainer runs the recipe.", "choices": list(TASKS)})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to every prompt (e.g. ask for <think>/<answer>)."}
    )
    prompt_column: str = field(
        default="question", metadata={"help": "Column holding the question when the data has no `prompt`."}
    )
    answer_column: str = field(
        default="answer",
        metadata={"help": "Column holding the gold answer; GSM8K-style '... #### N' gives the worked solution and N."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    lang: str | None = field(default=None, metadata={
        "help": "Keep only rows whose `lang` column is this language code (e.g. en); for oasst1's message trees, "
                "the trees whose root prompt is (thinktrain.conversations)."})
    min_solve_rate: float | None = field(default=None, metadata={
        "help": "Keep only problems whose solve_rate_column is at least this (drop the ones almost no attempt "
                "solves: nothing to reward); rows without a rate are dropped. Before max_train_samples."})
    max_solve_rate: float | None = field(default=None, metadata={
        "help": "Keep only problems whose solve_rate_column is at most this (drop the ones a model already "
                "solves: nothing to learn)."})
    solve_rate_column: str = field(default="llama8b_solve_rate", metadata={
        "help": "The column min/max_solve_rate read: Big-Math-RL-Verified's llama8b_solve_rate (the share of 64 "
                "Llama-3.1-8B samples that solved the problem) by default."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Drop training prompts longer than this many tokens (TRL 1.x removed the key; we honour it)."},
    )
    auto_resume: bool = field(
        default=True, metadata={"help": "Resume from the last checkpoint in output_dir when there is one."}
    )
    push_revisions: bool = field(
        default=True,
        metadata={"help": "With push_to_hub: upload each checkpoint to its own branch checkpoint-<step> in the "
                          "background (main gets the final model only)."},
    )
    license: str | None = field(
        default=None, metadata={"help": "License tag of the pushed model card (e.g. apache-2.0); default 'other'."}
    )
    tools: list[str] | None = field(
        default=None,
        metadata={"help": "Tools the model calls while it thinks: built-in names (thinktrain.tools.TOOLS: calculator, python) "
                          "or 'my_pkg.my_mod:my_tool' (typed, with a docstring). grpo: TRL's tool loop runs them in "
                          "rollouts; sft: GSM8K <<expr=result>> annotations become calculator calls and replies; "
                          "rft: sampling calls them; pretrain: the tokenizer gets the tool tags as single tokens."},
    )
    tool_timeout: float = field(default=10.0, metadata={
        "help": "Seconds a tool call may take (every tool, your own included): a call that hangs or raises returns "
                "an error string to the model (counted in the run log) and training goes on."})
    python_sandbox: str = field(default="namespaces", metadata={
        "help": "How the python tool isolates model-written code: namespaces (user/network/mount/PID namespaces, "
                "read-only root, seccomp, limits; refused where the kernel forbids them) or rlimits (limits, seccomp "
                "and a clean environment only; weaker: docs/tools.md).", "choices": ["namespaces", "rlimits"]})
    heldout_steps: int | None = field(
        default=None,
        metadata={"help": "Every this many optimizer steps (rft: after every round), greedy accuracy on heldout_problems "
                          "held-out problems, logged as heldout/accuracy beside the loss (trainer_state, report_to) "
                          "and drawn by `thinktrain report`; also once before training (not rft). Needs gold "
                          "answers."},
    )
    heldout_keep_best: bool = field(
        default=False,
        metadata={"help": "With heldout_steps: the saved model is the one at the best held-out accuracy (ties: the later "
                          "step), not the last step's; its trainable weights wait in output_dir/heldout-best.safetensors "
                          "while training (a resumed run keeps them)."},
    )
    heldout_patience: int | None = field(
        default=None,
        metadata={"help": "With heldout_steps: stop training after this many held-out evaluations in a row without "
                          "an accuracy at least as good as the best (early stopping; pair it with heldout_keep_best); 0: never."},
    )
    heldout_problems: int = field(
        default=100, metadata={"help": "How many held-out problems heldout_steps evaluates (the split's first N)."})
    heldout_split: str | None = field(
        default=None, metadata={"help": "The split heldout_steps evaluates on (default: dataset_test_split)."})
    heldout_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Token budget of each held-out answer (default: max_completion_length, "
                                        "or 256 where the task has none)."})
    dataset_mixture: dict | str | None = field(
        default=None,
        metadata={"help": "Several datasets as one, as open-r1 writes it: {datasets: [{id, config, split, columns, "
                          "weight}], seed, test_split_size}; `columns` may be a mapping {old: new} that renames "
                          "(thinktrain.mixture). Replaces dataset_name. JSON on the CLI."},
    )
    learning_rate_groups: dict | str | None = field(
        default=None,
        metadata={"help": "{regex: lr}: parameters whose name matches the regex (re.search; first match wins) train "
                          "at that learning rate instead of learning_rate, on the same schedule; a rate of 0 "
                          "freezes them (with learning_rate 0: everything outside the groups). JSON on the CLI."},
    )


# --------------------------------------------------------------------------- grpo: reward parameters


@dataclass
class RewardArguments:
    """Reward parameters: recipe keys of task grpo (names must not collide with GRPOConfig/ModelConfig fields)."""

    think_prefilled: bool | None = field(default=None, metadata={
        "help": "The chat template opens the assistant turn with <think> (R1-distill, Qwen3): judge format and "
                "tag_count as if each completion began with it. Unset: detect from the tokenizer's chat template."})
    cosine_min_value_wrong: float = field(default=-1.0, metadata={
        "help": "cosine: reward of a wrong answer at length 0."})
    cosine_max_value_wrong: float = field(default=-0.5, metadata={
        "help": "cosine: reward of a wrong answer at cosine_max_len (longer wrong answers are punished less)."})
    cosine_min_value_correct: float = field(default=0.5, metadata={
        "help": "cosine: reward of a correct answer at cosine_max_len."})
    cosine_max_value_correct: float = field(default=1.0, metadata={
        "help": "cosine: reward of a correct answer at length 0 (shorter correct answers earn more)."})
    cosine_max_len: int = field(default=1000, metadata={
        "help": "cosine: length where the schedule ends, in completion tokens (characters without completion_ids)."})
    repetition_n_grams: int = field(default=3, metadata={"help": "repetition: size of the word n-grams compared."})
    repetition_max_penalty: float = field(default=-1.0, metadata={
        "help": "repetition: penalty of a completion made only of repeats (<= 0)."})
    overlong_max_length: int | None = field(default=None, metadata={
        "help": "overlong: token length scored -1 (and beyond). Unset: max_completion_length."})
    overlong_buffer: int = field(default=256, metadata={
        "help": "overlong: punishment ramps from 0 to -1 over the last this-many tokens before overlong_max_length."})

    def __post_init__(self):
        for key, ok, rule in (
            ("cosine_max_len", self.cosine_max_len > 0, "> 0"),
            ("repetition_n_grams", self.repetition_n_grams >= 1, ">= 1"),
            ("repetition_max_penalty", self.repetition_max_penalty <= 0, "<= 0 (it is a penalty)"),
            ("overlong_buffer", self.overlong_buffer >= 0, ">= 0"),
            ("overlong_max_length", self.overlong_max_length is None or self.overlong_max_length > 0, "> 0"),
        ):
            if not ok:
                raise ValueError(f"{key} must be {rule}, got {getattr(self, key)}")


@dataclass
class GRPORecipeArguments(RecipeArguments, RewardArguments):
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Reward names (thinktrain.rewards.REWARDS) or dotted paths 'my_pkg.my_mod:my_reward'."},
    )


# --------------------------------------------------------------------------- pretrain


@dataclass
class PretrainArguments(RecipeArguments):
    vocab_size: int = field(default=512, metadata={"help": "Size of the BPE vocabulary trained here (specials, 256 "
                                                           "bytes and the think/answer tags included)."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "Reuse this tokenizer (path or Hub id) instead of training one; scratch models only."})
    tokenizer_train_samples: int = field(default=20000, metadata={
        "help": "Train the tokenizer on the first N training documents."})
    model_config_overrides: dict | str | None = field(default=None, metadata={
        "help": "LlamaConfig fields replacing the preset's, e.g. {num_hidden_layers: 2} (JSON on the command line)."})
    peak_tflops: float | None = field(default=None, metadata={
        "help": "Peak TFLOP/s of one device, for MFU. Unset: measured with a matmul in the training precision."})

    def __post_init__(self):
        if self.vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size={self.vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB} "
                             f"(4 specials + 256 bytes + 4 tags)")
        if self.tokenizer_train_samples < 1 or (self.peak_tflops is not None and self.peak_tflops <= 0):
            raise ValueError("tokenizer_train_samples and peak_tflops must be positive")
        if isinstance(self.model_config_overrides, str):  # from the command line
            try:
                self.model_config_overrides = json.loads(self.model_config_overrides)
            except json.JSONDecodeError:
                raise ValueError("model_config_overrides: expected a JSON object, e.g. '{\"num_hidden_layers\": 2}'")
        from transformers import LlamaConfig

        known = list(LlamaConfig().to_dict())  # LlamaConfig takes any keyword silently: catch typos here
        for key in self.model_config_overrides or {}:
            if key not in known:
                raise ValueError(f"model_config_overrides: '{key}' is not a LlamaConfig field{suggest(key, known)}")


@dataclass
class PretrainConfig(SFTConfig):
    """SFTConfig whose defaults pack raw text for pretraining ('wrapped': documents run across block boundaries)."""

    packing: bool = field(default=True, metadata={"help": "Pack documents into max_length blocks."})
    packing_strategy: str = field(default="wrapped", metadata={"help": "'wrapped' keeps every token; see SFTConfig."})


# --------------------------------------------------------------------------- rft: expert iteration


SELECTION_RULES = ("best_correct", "all_correct")


@dataclass
class RFTArguments(GRPORecipeArguments):
    """Expert iteration (rejection-sampling fine-tuning): rounds of sample -> keep the verified -> SFT on them.
    The SFT of each round takes the trainer keys (SFTConfig: learning_rate, max_steps per round, ...)."""

    rounds: int = field(default=3, metadata={"help": "Rounds of sample -> select -> train; each starts from the last."})
    prompts_per_round: int | None = field(default=None, metadata={
        "help": "Practice prompts sampled per round (fresh ones each round, in a seeded order; wraps around). "
                "Unset: every training prompt each round."})
    num_generations: int = field(default=8, metadata={"help": "Completions sampled per prompt."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (top_p 1, no top-k)."})
    max_completion_length: int = field(default=256, metadata={"help": "Tokens generated per completion at most."})
    sampling_batch_size: int = field(default=256, metadata={"help": "Sequences per generate() call while sampling."})
    selection: str = field(default="best_correct", metadata={
        "help": "Which completions of a prompt are kept: best_correct = among those the correctness reward scores "
                "1, the highest total (weighted) reward, ties to the fewest tokens; all_correct = every distinct "
                "correct one. A prompt with no correct completion keeps nothing.",
        "choices": list(SELECTION_RULES)})
    correctness_reward: str = field(default="accuracy", metadata={
        "help": "The reward (one of reward_funcs) that decides right (1) from wrong."})
    required_rewards: list[str] = field(default_factory=list, metadata={
        "help": "Rewards (of reward_funcs) that must score 1 too for a completion to count as right, e.g. "
                "[arithmetic]: a right answer reached through a false equation is not kept."})
    reward_weights: list[float] | None = field(default=None, metadata={
        "help": "Weights of reward_funcs in the total that ranks correct completions (default: all 1)."})
    worked_split: str | None = field(default=None, metadata={
        "help": "A split of worked solutions (same dataset) added to every round's training pairs: the gold "
                "examples imitated again beside the model's own verified answers. Unset: only the kept pairs."})
    use_vllm: bool = field(default=False, metadata={"help": "Not supported: rft samples with thinktrain's generator."})
    max_tool_calling_iterations: int | None = field(default=None, metadata={
        "help": "With tools: rounds of tool calls per completion at most (unset: until max_completion_length)."})

    def __post_init__(self):
        super().__post_init__()
        for key in ("rounds", "num_generations", "max_completion_length", "sampling_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise ValueError(f"prompts_per_round must be >= 1 (or unset for all), got {self.prompts_per_round}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (rft samples), got {self.temperature}")
        if self.selection not in SELECTION_RULES:
            raise ValueError(f"selection '{self.selection}' does not exist{suggest(self.selection, SELECTION_RULES)}; "
                             f"choose one of: {', '.join(SELECTION_RULES)}")
        if self.use_vllm:
            raise ValueError("use_vllm: rft samples with thinktrain's batched generator (the evaluation's); vLLM "
                             "sampling is not built or tested for rft: set use_vllm: false")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} values but reward_funcs has "
                             f"{len(self.reward_funcs)}: give one weight per reward")
        if self.correctness_reward not in self.reward_funcs:
            raise ValueError(f"correctness_reward '{self.correctness_reward}' is not in reward_funcs "
                             f"({', '.join(self.reward_funcs)}): rft keeps only completions it scores 1, so add it "
                             f"(e.g. reward_funcs: [accuracy, format]) or name another")
        if missing := [r for r in self.required_rewards if r not in self.reward_funcs]:
            raise ValueError(f"required_rewards {', '.join(missing)} not in reward_funcs "
                             f"({', '.join(self.reward_funcs)}): add them there (weight 0 keeps them out of the "
                             f"ranking) or drop them")


# --------------------------------------------------------------------------- evaluation (`thinktrain eval`)


@dataclass
class EvalArguments:
    """How held-out problems are generated and scored; `thinktrain eval`'s options and evaluate_model's settings."""

    model: str | None = field(default=None, metadata={"help": "Checkpoint folder (e.g. runs/tiny/sft) or Hub id."})
    dataset: str | None = field(default=None, metadata={
        "help": "Hub id, .jsonl/.json/.parquet/.csv file or folder, or synthetic:gsm8k."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config, e.g. main for openai/gsm8k."})
    split: str = field(default="test", metadata={"help": "Split to evaluate (a single file is its own split)."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N problems."})
    num_samples: int = field(default=1, metadata={
        "help": "k samples per problem for sampled accuracy / pass@k / maj@k (1: greedy only)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (k > 1; top_p 1, no top-k)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per completion at most."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate() call."})
    system_prompt: str | None = field(default=None, metadata={
        "help": "Default: the model folder's recipe.yaml system_prompt, else thinktrain's think/answer prompt; '' "
                "for none."})
    prompt_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling (greedy is deterministic)."})
    tools: list[str] | None = field(default=None, metadata={
        "help": "Tools the model may call (e.g. calculator): their replies count against max_new_tokens, as in "
                "GRPO's tool loop."})
    max_tool_calling_iterations: int | None = field(default=None, metadata={
        "help": "With --tools: rounds of tool calls per completion at most (unset: until max_new_tokens)."})
    tool_timeout: float = field(default=10.0, metadata={
        "help": "With --tools: seconds a tool call may take; a hang or exception is an error string to the model."})
    python_sandbox: str = field(default="namespaces", metadata={
        "help": "With --tools python: namespaces or rlimits (docs/tools.md).", "choices": ["namespaces", "rlimits"]})
    output: str | None = field(default=None, metadata={
        "help": "Write results + per-problem completions as JSON here."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})


# --------------------------------------------------------------------------- which dataclasses a task reads


def dataclass_types(task: str) -> tuple:
    """The dataclasses whose fields are a task's recipe keys, in the order parse returns them."""
    return {
        "pretrain": (PretrainArguments, PretrainConfig, ModelConfig),
        "sft": (RecipeArguments, SFTConfig, ModelConfig),
        "grpo": (GRPORecipeArguments, GRPOConfig, ModelConfig),
        "rft": (RFTArguments, SFTConfig, ModelConfig),
    }[task]


# --------------------------------------------------------------------------- the parsed recipe


@dataclass
class Recipe:
    """A parsed recipe: the task's three dataclasses, the keys the user set, and what parse decided for them."""

    task: str
    script_args: object  # configs.RecipeArguments (or its GRPO / pretrain subclass)
    training_args: object  # SFTConfig, GRPOConfig or configs.PretrainConfig
    model_args: object  # trl.ModelConfig
    keys: list[str] = field(default_factory=list)  # set in the YAML or on the command line, in that order
    bf16_fallback: str | None = None  # why a CPU bf16 recipe trains in fp32 here (the run header says it)
    secrets: list[str] = field(default_factory=list)  # names of the secrets given (never their values)
    tools: list = field(default_factory=list)  # the `tools` key resolved once to functions (validate); all use these
    rewards: list = field(default_factory=list)  # reward_funcs as functions: resolved (validate), bound (run.start)
    heldout: object = None  # the held-out problems of heldout_steps (prompt + solution), loaded by run.start

    def resolved(self) -> dict:
        """The keys the user set, with the values that were actually used (what recipe.yaml records and the model
        card quotes). Secret keys (hub_token, ...) are left out: both files are uploaded with the model."""
        out = {}
        for key in dict.fromkeys(self.keys):
            if is_secret(key):
                continue
            for obj in (self.script_args, self.training_args, self.model_args):
                if any(f.name == key for f in dataclasses.fields(obj)):
                    value = getattr(obj, key)
                    out[key] = getattr(value, "value", value)  # enums -> their string
                    break
        return {"task": self.task, **out}

    def to_yaml(self) -> str:
        """recipe.yaml: resolved(), led by a comment naming the secrets that were given and not recorded, and where
        a rerun takes them from, so the file stays rerunnable without ever holding one."""
        hub = [s for s in self.secrets if s in ("hub_token", "env HF_TOKEN", "env HUGGING_FACE_HUB_TOKEN")]
        other = [s for s in self.secrets if s not in hub]
        note = [f"# Secrets given to this run, not recorded here: {', '.join(self.secrets)}."] if self.secrets else []
        if hub:
            note.append("# To rerun it, give the Hub token as HF_TOKEN in the environment, or run `hf auth login`.")
        if other:
            note.append(f"# To rerun it, give {', '.join(other)} again (environment or command line), not in this "
                        f"file.")
        return "".join(line + "\n" for line in note) + yaml.safe_dump(self.resolved(), sort_keys=False)
