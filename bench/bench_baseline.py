"""Benchmark Step 2: batched `baseline.evaluate_behaviour` vs the spec's one-prompt-at-a-time loop.

The naive loop is Step 2's algorithm as written in the spec: for every prompt and each of its two
answers, one forward pass over prompt + answer, a log-softmax over the whole sequence, a Python loop
summing the teacher-forced log-probs of the answer tokens, division by the answer's length. It uses
the package's token convention (the sink token first) so that only batching differs.

    python bench/bench_baseline.py                 # the demo model if data/demo/model exists, else the tiny one
    python bench/bench_baseline.py --model tiny    # the random tiny Qwen3 from llm_biology.testing (offline hub)
    python bench/bench_baseline.py --model random:8x512   # a random Qwen3 with 8 layers of width 512 (tiny tokenizer)
    python bench/bench_baseline.py --model qwen3-0.6b --device cuda
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent


def naive_normalized_diffs(lm, records):
    """Spec Step 2, one prompt and one answer per forward pass."""
    import torch
    import torch.nn.functional as F

    def answer_logprob(prompt, answer):
        prompt_ids = [lm.sink_id] + lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        full = torch.tensor([prompt_ids + target_ids], device=lm.device)
        with torch.no_grad():
            logits = lm.model(full).logits[0].float()
        log_softmax = F.log_softmax(logits, dim=-1)
        total = 0.0
        for j, target_id in enumerate(target_ids):
            token_position = len(prompt_ids) + j
            total += log_softmax[token_position - 1, target_id].item()  # causal shift
        return total, len(target_ids)

    out = []
    for r in records:
        lc, nc = answer_logprob(r.prompt, r.correct_answer)
        lw, nw = answer_logprob(r.prompt, r.incorrect_answer)
        out.append(lc / nc - lw / nw)
    return out


def best_time(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter(); result = fn(); best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="'tiny', 'random:<layers>x<d_model>', a registry slug, hub id or "
                   "folder (default: demo if data/demo/model exists, else tiny)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="time each method this many times, keep the best")
    a = p.parse_args(argv)

    import numpy as np
    import torch
    from llm_biology.core import BEHAVIOURS
    from llm_biology.models import load_model, logprob_diffs
    from llm_biology.prompts import generate_prompts
    from llm_biology.baseline import evaluate_behaviour

    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, device {a.device}")
    model = a.model or ("demo" if (ROOT / "data" / "demo" / "model").is_dir() else "tiny")
    if model == "tiny":
        from llm_biology.testing import tiny_hub
        hub = tiny_hub()
        lm = load_model(hub.model_id, device=a.device, dtype="float32", cache_dir=hub.cache_dir)
    elif model.startswith("random:"):
        import tempfile
        from llm_biology.testing import make_tiny_model
        n_layers, d_model = (int(x) for x in model.split(":", 1)[1].split("x"))
        folder = make_tiny_model(Path(tempfile.mkdtemp()) / "random", n_layers=n_layers, d_model=d_model,
                                 n_heads=max(1, d_model // 64), n_kv_heads=max(1, d_model // 128),
                                 d_mlp=3 * d_model, init_std=0.02)
        lm = load_model(str(folder), device=a.device, dtype="float32")
    else:
        lm = load_model(model, device=a.device, dtype="float32")
    print(f"model: {model}: {lm}")

    records = {b: generate_prompts(b, lm.tokenizer, seed=42).test for b in BEHAVIOURS}
    all_records = [r for rs in records.values() for r in rs]
    print(f"prompts: {', '.join(f'{b} {len(rs)}' for b, rs in records.items())} ({len(all_records)} test prompts, "
          f"{2 * len(all_records)} prompt+answer sequences), batch size {a.batch_size}")

    naive_normalized_diffs(lm, all_records[:2])  # warm-up
    t_naive, naive = best_time(lambda: naive_normalized_diffs(lm, all_records), a.repeats)
    t_lp, lp = best_time(lambda: logprob_diffs(lm, all_records, batch_size=a.batch_size), a.repeats)
    t_eval, res = best_time(lambda: {b: evaluate_behaviour(lm, rs, b, batch_size=a.batch_size)
                                     for b, rs in records.items()}, a.repeats)
    batched = np.concatenate([r.table["normalized_diff"].to_numpy() for r in res.values()])
    err = float(np.abs(batched - np.asarray(naive)).max())
    err_lp = float(np.abs(lp.normalized_diff - np.asarray(naive)).max())

    print(f"naive one-at-a-time loop (spec):             {t_naive:8.3f} s")
    print(f"models.logprob_diffs (batched log-probs):    {t_lp:8.3f} s   speed-up x{t_naive / t_lp:.1f}")
    print(f"evaluate_behaviour x4 (+ logit diffs, table): {t_eval:8.3f} s   speed-up x{t_naive / t_eval:.1f}")
    print(f"max |normalized diff batched - naive| = {err:.2e} (logprob_diffs: {err_lp:.2e}), float32, tolerance 1e-4")
    if not (err <= 1e-4 and err_lp <= 1e-4):
        print("FAIL: batched and naive normalized differences disagree beyond 1e-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
