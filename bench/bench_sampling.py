"""Practice's sampling on CPU: each prompt read once for its k samples (what thinktrain does) against k times.

    .venv/bin/python bench/bench_sampling.py [--model runs/demo/sft] [--prompts 256] [--samples 8]

Samples k completions of each of the first `prompts` practice problems of `synthetic:gsm8k` with
`thinktrain.generation.generate`, as a practice round of the demo does (80 new tokens, T = 1.0, batches of 512, the
recipe's system prompt), once with the shared prompt forward and once without it, from the same seed, and prints
seconds, the speed-up and how many completions are token-for-token identical (all must be: sharing is a speed
choice, never a result change).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SYSTEM = "Think inside <think> </think>, then answer inside <answer> </answer>."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/demo/sft"), help="model (default: the demo's SFT)")
    p.add_argument("--prompts", type=int, default=256, help="practice problems")
    p.add_argument("--samples", type=int, default=8, help="completions per problem (k)")
    a = p.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"bench_sampling: error: no model at {a.model}; run `make demo` first or pass --model PATH")

    from transformers import set_seed

    from thinktrain import generation as G
    from thinktrain.data import to_grpo
    from thinktrain.models import load_checkpoint
    from thinktrain.synthetic import load

    model, tok = load_checkpoint(a.model, device="cpu")
    practice = load("gsm8k")["practice"].select(range(a.prompts))
    prompts, _ = G.encode_prompts(tok, to_grpo(practice, "question", "answer", SYSTEM, "synthetic:gsm8k")["prompt"])
    rows = [prompt for prompt in prompts for _ in range(a.samples)]
    shared = G._shared_prompts
    results = {}
    for name, share in (("k forwards", lambda *args: None), ("one (thinktrain)", shared)):
        G._shared_prompts = share
        set_seed(0)
        t = time.perf_counter()
        out = G.generate(model, tok, rows, max_new_tokens=80, batch_size=512, do_sample=True, progress=False)
        results[name] = (time.perf_counter() - t, out)
    G._shared_prompts = shared
    (t0, s0), (t1, s1) = results.values()
    print(f"\npractice sampling on CPU: {a.model}, {a.prompts} prompts x {a.samples} samples, 80 new tokens, "
          f"batches of 512")
    print(f"{'prompt forwards':<18} {'seconds':>8}")
    for name, (t, _) in results.items():
        print(f"{name:<18} {t:8.1f}")
    print(f"speed-up           {t0 / t1:7.2f}x")
    print(f"identical completions: {sum(x == y for x, y in zip(s0, s1))}/{len(s0)}")


if __name__ == "__main__":
    main()
