"""The whole pipeline on a real Qwen3 shape with full-width transcoders: per-stage wall time and peak memory.

Builds (once, cached under --root) a random-weight Qwen3 of a published shape with the real Qwen3
tokenizer (`testing.make_qwen3_model`) and random ReLU transcoders of the published width and format
(`testing.make_published_transcoders`: 163,840 features per layer, bf16, ~64 active per token),
then runs `llm-biology run` on it in a fresh working folder and prints, per stage, the wall time,
the peak resident memory and the peak GPU memory that the stage recorded (`data/<slug>/stages/`).
The model is random, so every behaviour fails its baseline; `--include-failed` keeps them in
attribution and interventions so every stage does its full work.

    python bench/bench_real_scale.py                                  # Qwen3-0.6B shape, 28 layers, CPU
    python bench/bench_real_scale.py --size 4B --n-layers 8 --device cuda --dtype bfloat16
    python bench/bench_real_scale.py --d-transcoder 16384             # a narrower set (quick check)

Disk: about 0.67 GB per 0.6B layer and 1.7 GB per 4B layer of transcoders, plus the model.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("prompts", "baseline", "features", "attribution", "interventions")


def build(root: Path, size: str, n_layers: int | None, d_transcoder: int, l0: float) -> tuple[Path, Path]:
    """The fixture's model and transcoder folders (built once; a finished build is marked by `done`)."""
    from llm_biology.testing import make_published_transcoders, make_qwen3_model, qwen3_config
    cfg = qwen3_config(size, n_layers)
    L = cfg.num_hidden_layers
    folder = root / f"qwen3-{size}-{L}L-{d_transcoder}"
    model, tcs = folder / "model", folder / "transcoders"
    if not (folder / "done").exists():
        t0 = time.time()
        if not (model / "config.json").exists(): make_qwen3_model(model, size, "bfloat16", n_layers=L)
        print(f"model {size} ({L} layers) in {time.time() - t0:.0f} s", flush=True)
        t0 = time.time()
        make_published_transcoders(tcs, n_layers=L, d_model=cfg.hidden_size, d_transcoder=d_transcoder, l0=l0)
        print(f"{L} transcoder layers of {d_transcoder} features in {time.time() - t0:.0f} s", flush=True)
        (folder / "done").write_text("")
    return model, tcs


def run(model: Path, tcs: Path, work: Path, args) -> float:
    """`llm-biology run` on the fixture in `work`; returns its wall time."""
    if work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True)
    cmd = [sys.executable, "-c", "import sys; from llm_biology.cli import main; sys.exit(main())", "run", "--model", str(model), "--transcoders", str(tcs),
           "--n-prompts", str(args.n_prompts), "--include-failed", "--no-render", "--device", args.device,
           "--max-feature-nodes", str(args.max_feature_nodes), "--corpus-size", str(args.corpus_size),
           "--batch-size", str(args.batch_size), *(["--dtype", args.dtype] if args.dtype else []),
           *(["--stages", args.stages] if args.stages else []), *(["--offload"] if args.offload else [])]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=work, env=env)
    if r.returncode != 0: sys.exit(f"llm-biology run exited {r.returncode}")
    if not (work / "data").is_dir(): sys.exit("llm-biology run wrote no data folder")
    return time.time() - t0


def report(work: Path, wall: float, args) -> None:
    roots = [p for p in (work / "data").iterdir() if (p / "stages").is_dir()]
    stages = {p.stem: json.loads(p.read_text()) for p in sorted(roots[0].glob("stages/*.json"))}
    print(f"\n{'stage':<14}{'wall (s)':>10}{'peak RSS (GiB)':>16}{'peak GPU (GiB)':>16}")
    for s in STAGES:
        if s not in stages: continue
        r = stages[s]
        gpu = "-" if r.get("peak_gpu_mb") is None else f"{r['peak_gpu_mb'] / 1024:.2f}"
        print(f"{s:<14}{r['wall_time_s']:>10.1f}{r['peak_rss_mb'] / 1024:>16.2f}{gpu:>16}")
    worst = max(r["peak_rss_mb"] for r in stages.values()) / 1024
    print(f"{'whole run':<14}{wall:>10.1f}{worst:>16.2f}   (torch threads {args.threads}, device {args.device})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="0.6B", help="a published Qwen3 size: 0.6B, 1.7B, 4B, 8B, 14B")
    p.add_argument("--n-layers", type=int, default=None, help="fewer layers than the real model (default: all)")
    p.add_argument("--d-transcoder", type=int, default=163840)
    p.add_argument("--l0", type=float, default=64)
    p.add_argument("--n-prompts", type=int, default=2)
    p.add_argument("--max-feature-nodes", type=int, default=1024)
    p.add_argument("--corpus-size", type=int, default=64, help="texts the feature catalog reads")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--stages", default=None)
    p.add_argument("--offload", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", default="/tmp/llm_biology_real_scale")
    a = p.parse_args(argv)
    model, tcs = build(Path(a.root), a.size, a.n_layers, a.d_transcoder, a.l0)
    work = Path(a.root) / "work"
    report(work, run(model, tcs, work, a), a)


if __name__ == "__main__":
    main()
