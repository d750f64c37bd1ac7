"""thinktrain: recipes that train language models to think (<think>…</think><answer>…</answer>) on TRL."""

__version__ = "0.1.0"
