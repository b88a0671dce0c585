"""Benchmark Step 5: a 100-prompt ablation sweep, batched vs a per-prompt loop vs circuit-tracer's loop.

The sweep: for each of `--n-prompts` prompts (all four behaviours, train split) the baseline logit
difference and the logit difference with each of `--n-sets` feature sets zero-ablated at every
position but 0 (5 features each, at the middle layer, picked among the most active). Three ways:

1. `interventions.ablate_features`: every (prompt, set) row in right-padded batches of `--batch-size`,
   one forward pass per batch, the edits applied by hooks on the real model;
2. the same hooks, one prompt and one set per forward pass (`edits.intervened_logit_diffs` on one row);
3. circuit-tracer 0.5.0's `ReplacementModel.feature_intervention` (nnsight backend), one call per prompt
   and set (its natural loop), plus one plain forward per prompt for the baseline.

All three must agree to 1e-4. Timings are the best of `--repeats` runs with torch pinned to
`--threads` threads (default 1; the machine is shared).

    python bench/bench_interventions.py                      # the demo model if built, else the tiny one
    python bench/bench_interventions.py --model random:4x256 # a random Qwen3 (4 layers, width 256) + random transcoders
    python bench/bench_interventions.py --model qwen3-0.6b --device cuda --no-peer
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent


def best_time(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter(); result = fn(); best = min(best, time.perf_counter() - t0)
    return best, result


def open_model(name, device):
    "(lm, transcoders, model folder, transcoder folder) for 'tiny', 'random:LxD', 'demo', a slug, hub id or folder."
    from llm_biology.models import load_model
    from llm_biology.transcoders import load_transcoders
    if name == "tiny":
        from llm_biology.testing import tiny_hub
        hub = tiny_hub()
        lm = load_model(hub.model_id, device=device, dtype="float32", cache_dir=hub.cache_dir)
        tcs = load_transcoders(hub.transcoder_ids["jumprelu"], device=device, dtype="float32", cache_dir=hub.cache_dir)
        return lm, tcs, Path(hub.folders["model"]), Path(hub.folders["jumprelu"])
    if name.startswith("random:"):
        from llm_biology.testing import make_tiny_model, make_random_transcoders
        n_layers, d_model = (int(x) for x in name.split(":", 1)[1].split("x"))
        tmp = Path(tempfile.mkdtemp())
        folder = make_tiny_model(tmp / "model", n_layers=n_layers, d_model=d_model, n_heads=max(1, d_model // 64),
                                 n_kv_heads=max(1, d_model // 128), d_mlp=3 * d_model)
        tc_dir = make_random_transcoders(tmp / "tc", n_layers, d_model, 8 * d_model)
        return (load_model(str(folder), device=device, dtype="float32"),
                load_transcoders(tc_dir, device=device, dtype="float32"), folder, tc_dir)
    from llm_biology.core import MODEL_REGISTRY
    spec = MODEL_REGISTRY.get(name)
    if spec is None: raise SystemExit(f"No transcoders known for {name}: use a registry slug, 'tiny' or 'random:LxD'.")
    lm = load_model(name, device=device, dtype="float32")
    tcs = load_transcoders(spec.transcoder_ref(), device=device, dtype="float32")
    model_dir, tc_dir = Path(spec.model_ref()), Path(spec.transcoder_ref())
    return lm, tcs, model_dir if model_dir.is_dir() else None, tc_dir if tc_dir.is_dir() else None


def scorable(lm, records):
    "Records whose answers have a first differing token under this tokenizer."
    from llm_biology.core import LLMBiologyError
    from llm_biology.models import answer_tokens
    out = []
    for r in records:
        try: answer_tokens(lm.tokenizer, r.prompt, r.correct_answer, r.incorrect_answer); out.append(r)
        except LLMBiologyError: pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="'tiny', 'random:<layers>x<d_model>', a registry slug or folder "
                   "(default: demo if data/demo/model exists, else tiny)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-prompts", type=int, default=100)
    p.add_argument("--n-sets", type=int, default=3, help="feature sets ablated per prompt")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="time the batched run this many times, keep the best")
    p.add_argument("--no-peer", action="store_true", help="skip circuit-tracer")
    a = p.parse_args(argv)

    import numpy as np
    import torch
    from llm_biology.core import BEHAVIOURS
    from llm_biology.edits import feature_edit, intervened_logit_diffs
    from llm_biology.interventions import ablate_features
    from llm_biology.models import answer_tokens, capture_mlp
    from llm_biology.prompts import generate_prompts

    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, device {a.device}")
    name = a.model or ("demo" if (ROOT / "data" / "demo" / "model").is_dir() else "tiny")
    lm, tcs, model_dir, tc_dir = open_model(name, a.device)
    print(f"model: {name}: {lm}\ntranscoders: {tcs}")

    pools = [scorable(lm, generate_prompts(b, lm.tokenizer, seed=42).train) for b in BEHAVIOURS]
    records = [r for group in zip(*pools) for r in group][:a.n_prompts]  # interleave the behaviours
    layer = lm.n_layers // 2
    ctx = [answer_tokens(lm.tokenizer, r.prompt, r.correct_answer, r.incorrect_answer).context for r in records]
    acts = tcs[layer].encode(capture_mlp(lm, ctx[:16], layers=[layer], positions="all").inputs[layer][:, 1:])
    top = torch.topk(acts.amax((0, 1)), 5 * a.n_sets).indices.tolist()
    sets = [[(layer, f) for f in top[i::a.n_sets]] for i in range(a.n_sets)]
    n_rows = len(records) * (1 + len(sets))
    print(f"sweep: {len(records)} prompts x (baseline + {len(sets)} sets of 5 features at layer {layer}, every position) "
          f"= {n_rows} rows; batch size {a.batch_size}")

    def per_prompt_loop():
        base = np.array([intervened_logit_diffs(lm, tcs, [r], [[]])[0] for r in records])
        abl = np.array([[intervened_logit_diffs(lm, tcs, [r], [[feature_edit(l, None, f) for l, f in fs]])[0]
                         for r in records] for fs in sets])
        return base, abl

    ablate_features(lm, tcs, records[:4], sets, batch_size=a.batch_size)  # warm-up
    t_batched, out = best_time(lambda: ablate_features(lm, tcs, records, sets, batch_size=a.batch_size), a.repeats)
    t_loop, (base, abl) = best_time(per_prompt_loop, 1)
    err_loop = max(np.abs(out.baseline - base).max(), np.abs(out.intervened - abl).max())
    print(f"batched ablate_features:                 {t_batched:8.3f} s  ({n_rows / t_batched:7.1f} rows/s)")
    print(f"per-prompt loop (same hooks, 1 row/pass): {t_loop:8.3f} s  batched speed-up x{t_loop / t_batched:.1f}")
    print(f"max |batched - loop| = {err_loop:.2e}")
    ok = err_loop <= 1e-4

    if not a.no_peer and model_dir is not None and tc_dir is not None:
        try:
            from circuit_tracer import ReplacementModel
        except ImportError:
            print("circuit-tracer is not installed: skipped (install the `peer` extra)")
        else:
            rm = ReplacementModel.from_pretrained(str(model_dir), str(Path(tc_dir).resolve()), backend="nnsight",
                                                  device=torch.device(a.device), dtype=torch.float32)
            texts = [lm.tokenizer.decode(c) for c in ctx]
            assert all(rm.tokenizer(t).input_ids == c for t, c in zip(texts, ctx)), "token ids differ"
            at = [answer_tokens(lm.tokenizer, r.prompt, r.correct_answer, r.incorrect_answer) for r in records]

            def ct_loop():
                ld = lambda lg, i: (lg[0, -1, at[i].correct_id] - lg[0, -1, at[i].incorrect_id]).item()
                with torch.no_grad():
                    b = np.array([ld(lm.model(torch.tensor([c], device=lm.device)).logits, i) for i, c in enumerate(ctx)])
                ab = np.array([[ld(rm.feature_intervention(texts[i], [(l, p, f, 0.0) for l, f in fs for p in range(1, len(ctx[i]))],
                                                           freeze_attention=False, return_activations=False)[0], i)
                                for i in range(len(records))] for fs in sets])
                return b, ab
            t_ct, (cb, cab) = best_time(ct_loop, 1)
            err_ct = max(np.abs(out.baseline - cb).max(), np.abs(out.intervened - cab).max())
            print(f"circuit-tracer feature_intervention loop: {t_ct:8.3f} s  batched speed-up x{t_ct / t_batched:.1f}")
            print(f"max |batched - circuit-tracer| = {err_ct:.2e}")
            ok = ok and err_ct <= 1e-4
    elif not a.no_peer:
        print("circuit-tracer comparison needs local model and transcoder folders: skipped")
    if not ok:
        print("FAIL: the methods disagree beyond 1e-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
