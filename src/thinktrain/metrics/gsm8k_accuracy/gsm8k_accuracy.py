"""GSM8K accuracy as an `evaluate` metric module, loadable offline by path.

    import evaluate
    metric = evaluate.load("src/thinktrain/metrics/gsm8k_accuracy")   # the folder, or the .py file in it
    metric.compute(predictions=["<think>6*12</think><answer>72</answer>", "the answer is 72"],
                   references=["72", "72"])
    # {'accuracy': 0.5, 'accuracy_lenient': 1.0, 'unscored': 0}

Answer checking is `thinktrain.rewards.accuracy_reward`, the same function GRPO is rewarded with, so training
reward and evaluation can never disagree about what counts as right.
"""

import datasets
import evaluate

from thinktrain.answers import answer_block, gold_answer
from thinktrain.rewards import accuracy_reward

_DESCRIPTION = """Accuracy on GSM8K-style problems with a numeric answer.

`accuracy` (strict): the completion has an `<answer>...</answer>` block and its content is the gold number.
`accuracy_lenient`: the gold number is the completion's answer wherever it is written — the `<answer>` block
when there is one, else the final answer in the text (`\\boxed{N}`, `#### N`, "The answer is N", the last
number). Numbers compare exactly as numbers ("1,234" == "1234.0"). Both are thinktrain.rewards.accuracy_reward.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model completions.
    references (list of str): gold answers, e.g. "18" or "1,234" (a full GSM8K answer "... #### 18" works too).
    per_example (bool, default False): also return the per-completion lists `correct` and `correct_lenient`.
Returns:
    accuracy (float): strict accuracy, in [0, 1].
    accuracy_lenient (float): lenient accuracy, in [0, 1]; never below `accuracy`.
    unscored (int): references that could not be parsed as a number; they count as wrong in both accuracies.
    correct, correct_lenient, scored (list of bool): per prediction, only with per_example=True.
Examples:
    >>> metric = evaluate.load("path/to/gsm8k_accuracy")
    >>> metric.compute(predictions=["<answer>72</answer>", "so 72", "<answer>7</answer>"], references=["72"] * 3)
    {'accuracy': 0.3333333333333333, 'accuracy_lenient': 0.6666666666666666, 'unscored': 0}
"""

_CITATION = """@article{cobbe2021gsm8k,
  title={Training Verifiers to Solve Math Word Problems},
  author={Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and others},
  journal={arXiv preprint arXiv:2110.14168},
  year={2021}
}"""

def score(predictions: list[str], references: list[str]) -> tuple[list[bool], list[bool], list[bool]]:
    """-> (strict, lenient, scored) per prediction. Strict = lenient and an <answer> block exists; scored = the
    reference parsed as a number (unscored predictions count as wrong)."""
    gold = [gold_answer(r) for r in references]  # a full GSM8K answer -> its number
    rewards = accuracy_reward(list(predictions), solution=gold) if predictions else []
    lenient = [r is not None and r >= 1.0 for r in rewards]
    strict = [ok and answer_block(p) is not None for ok, p in zip(lenient, predictions)]
    return strict, lenient, [r is not None for r in rewards]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gsm8kAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/openai/grade-school-math"],
        )

    def _compute(self, predictions, references, per_example: bool = False):
        strict, lenient, scored = score(predictions, references)
        n = max(len(predictions), 1)
        out = {"accuracy": sum(strict) / n, "accuracy_lenient": sum(lenient) / n, "unscored": scored.count(False)}
        if per_example:
            out.update(correct=strict, correct_lenient=lenient, scored=scored)
        return out
