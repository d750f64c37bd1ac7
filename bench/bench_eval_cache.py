"""Generation on CPU: thinktrain.generation's two speed choices, each against its baseline in the same run.

    .venv/bin/python bench/bench_eval_cache.py [--model runs/demo/sft] [--limit 500] [--samples 2] [--practice 256]

1. The static KV cache against transformers' default dynamic one: the held-out problems' completions (the demo's
   settings: 96 new tokens, batches of 512, the model's chat template and the recipe's system prompt), greedy and
   then sampled at T = 1.0 from the same seed. The dynamic cache concatenates every layer's keys and values each
   token (`torch.cat`); the static one writes in place.
2. One forward of a prompt for its k samples against k forwards: 8 samples of each of the first `--practice`
   practice problems, as a practice round of the demo samples them (80 new tokens, T = 1.0, batches of 512).
Each prints seconds, the speed-up and how many completions are token-for-token identical (they must all be: these
are speed choices, never a result change).
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
    p.add_argument("--limit", type=int, default=500, help="held-out problems")
    p.add_argument("--samples", type=int, default=2, help="sampled completions per problem")
    p.add_argument("--practice", type=int, default=256, help="practice problems sampled 8 times each (0: skip)")
    a = p.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"bench_eval_cache: error: no model at {a.model}; run `make demo` first or pass --model PATH")

    from transformers import set_seed

    from thinktrain import generation as G
    from thinktrain.configs import EvalArguments
    from thinktrain.data import to_grpo
    from thinktrain.evaluation import load_problems
    from thinktrain.models import load_checkpoint

    model, tok = load_checkpoint(a.model, device="cpu")
    problems = load_problems(EvalArguments(dataset="synthetic:gsm8k", split="test", limit=a.limit))
    prompts, _ = G.encode_prompts(tok, to_grpo(problems, "question", "answer", SYSTEM, "synthetic:gsm8k")["prompt"])
    static = G._cache
    results = {}
    for name, cache in (("dynamic (default)", lambda device: {}), ("static (thinktrain)", static)):
        G._cache = cache
        t = time.perf_counter()
        greedy = G.generate(model, tok, prompts, max_new_tokens=96, batch_size=512, progress=False)
        t_greedy = time.perf_counter() - t
        set_seed(0)
        t = time.perf_counter()
        sampled = G.generate(model, tok, prompts * a.samples, max_new_tokens=96, batch_size=512, do_sample=True,
                             progress=False)
        results[name] = (t_greedy, time.perf_counter() - t, greedy, sampled)
    G._cache = static
    (dg, ds, g0, s0), (sg, ss, g1, s1) = results.values()
    print(f"\nevaluation generation on CPU: {a.model}, {len(prompts)} problems, 96 new tokens, batches of 512")
    print(f"{'cache':<20} {'greedy s':>9} {'sampled s':>10}")
    for name, (tg, ts, _, _) in results.items():
        print(f"{name:<20} {tg:9.1f} {ts:10.1f}")
    print(f"speed-up            {dg / sg:8.2f}x {ds / ss:9.2f}x")
    print(f"identical completions: greedy {sum(x == y for x, y in zip(g0, g1))}/{len(g0)}, "
          f"sampled {sum(x == y for x, y in zip(s0, s1))}/{len(s0)}")
    if a.practice:
        shared_prompts(G, model, tok, a.practice)


def shared_prompts(G, model, tok, n: int, k: int = 8) -> None:
    from transformers import set_seed

    from thinktrain.data import to_grpo
    from thinktrain.synthetic import load

    practice = load("gsm8k")["practice"].select(range(n))
    prompts, _ = G.encode_prompts(tok, to_grpo(practice, "question", "answer", SYSTEM, "synthetic:gsm8k")["prompt"])
    rows = [prompt for prompt in prompts for _ in range(k)]
    shared, results = G._shared_prompts, {}
    for name, share in (("k forwards", lambda *args: None), ("one (thinktrain)", shared)):
        G._shared_prompts = share
        set_seed(0)
        t = time.perf_counter()
        out = G.generate(model, tok, rows, max_new_tokens=80, batch_size=512, do_sample=True, progress=False)
        results[name] = (time.perf_counter() - t, out)
    G._shared_prompts = shared
    (t0, s0), (t1, s1) = results.values()
    print(f"\npractice sampling on CPU: {n} prompts x {k} samples, 80 new tokens, batches of 512")
    print(f"{'prompt forwards':<18} {'seconds':>8}")
    for name, (t, _) in results.items():
        print(f"{name:<18} {t:8.1f}")
    print(f"speed-up           {t0 / t1:7.2f}x")
    print(f"identical completions: {sum(x == y for x, y in zip(s0, s1))}/{len(s0)}")


if __name__ == "__main__":
    main()
