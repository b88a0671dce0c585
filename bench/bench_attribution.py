"""Benchmark the attribution engine against circuit-tracer 0.5.0 (nnsight backend), same process, same graph.

Both engines attribute the same token ids (sink first) on the same random Qwen3 folder and
transcoder folder, to circuit-tracer's default targets (top logits), keeping every active feature
(or --max-feature-nodes of them, in influence order).
Printed per size: wall time and peak resident-memory growth of each engine and their ratios, the
max |adjacency difference| after aligning node orders, and where our time goes.

    python bench/bench_attribution.py                  # tiny (2 layers) and large (~8k active features)
    python bench/bench_attribution.py --size large --batch-size 512
    python bench/bench_attribution.py --size large --max-feature-nodes 2048   # influence-ordered subset
    python bench/bench_attribution.py --no-peer        # ours only (no circuit-tracer needed)
    python bench/bench_attribution.py --size qwen3-0.6b --max-feature-nodes 256   # the real shape, full width
    python bench/bench_attribution.py --size qwen3-0.6b --max-feature-nodes 256 --no-peer --n-prompts 8   # attribute_many

Sizes: `tiny` is the test model (2 layers, d_model 64, d_transcoder 256); `large` is a random Qwen3
with 8 layers, d_model 256 (8 heads, 4 KV heads, d_mlp 768) and ReLU transcoders of 288 features
per layer: about 8,300 features are active on the 16-token prompt. `qwen3-0.6b` is the real
Qwen3-0.6B shape (28 layers, d_model 1024, vocab 151,936, random bf16 weights, the real tokenizer)
with 28 random ReLU transcoders of the published width (163,840 features, ~64 active per token, 18 GB
on disk; built once by `bench_real_scale.py`'s fixture builder). At that size neither engine holds
the transcoders in memory: ours streams layers and reads rows of active features as safetensors
slices; circuit-tracer is given its own lazy loading (`lazy_encoder=True, lazy_decoder=True`; with
its defaults the encoders alone take 18.8 GB in float32 and it is killed on a 24 GB machine). Both
run in float32 on one thread, with the same feature cap. torch uses one thread. At that size the
page cache decides the timings, so both engines start from the same state (`--cache`): `warm` (the
default) times each engine after one untimed run of its own, `cold` drops the transcoder files from
the cache before each timed run, so every byte comes from the disk.
"""
import argparse
import ctypes
import gc
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXT = "The capital of France is Paris. The capital of Japan is Tokyo. The cat is in the room"
MORE = ["The keys to the cabinet on the left are", "My favourite food is pizza, and my brother likes",
        "The movie was wonderful and the actors were", "12 + 35 = 47. 23 + 41 = 64. 18 + 26 =",
        "The capital of Italy is Rome. The capital of Spain is", "The dogs in the garden behind the house",
        "I hated the food, the service was slow and the room was"]   # --n-prompts: TEXT, then these
SIZES = {  # name: (n_layers, d_model, n_heads, n_kv_heads, d_mlp, d_transcoder, activation)
    "tiny": (2, 64, 4, 2, 128, 256, "jumprelu"),
    "large": (8, 256, 8, 4, 768, 288, "relu"),
}


REAL = {"qwen3-0.6b": "0.6B"}


def build(size: str, root: Path):
    """The model and transcoder folders of one size (built once under `root`)."""
    from llm_biology.testing import make_random_transcoders, make_tiny_model
    if size in REAL:
        import sys
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_real_scale import build as build_real
        return build_real(Path("/tmp/llm_biology_real_scale"), REAL[size], None, 163840, 64)
    L, D, H, KV, M, DT, act = SIZES[size]
    folder = root / f"{size}-{L}x{D}x{DT}"
    if not (folder / "tc" / "config.yaml").exists():
        make_tiny_model(folder / "model", n_layers=L, d_model=D, n_heads=H, n_kv_heads=KV, d_mlp=M)
        make_random_transcoders(folder / "tc", n_layers=L, d_model=D, d_transcoder=DT, activation=act)
    return folder / "model", folder / "tc"


class PeakRSS:
    """Peak resident memory growth (bytes) while the block runs, sampled every few ms."""
    def __init__(self, interval=0.002):
        import psutil
        self.proc, self.interval = psutil.Process(), interval

    def __enter__(self):
        gc.collect(); _trim()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True); self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss); time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False; self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.growth = self.peak - self.base


def _trim():
    "Give freed heap memory back to the OS (glibc), so each engine starts from the same baseline."
    try: ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError: pass


def drop_page_cache(tc_dir):
    "Drop the transcoder files from the page cache (posix_fadvise DONTNEED), so every read goes to the disk."
    for p in sorted(Path(tc_dir).glob("layer_*.safetensors")):
        fd = os.open(p, os.O_RDONLY)
        try: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally: os.close(fd)


def measure(fn, repeats: int, before=lambda: None):
    best_t, best_m, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        out = None; gc.collect(); _trim(); before()
        with PeakRSS() as m:
            t0 = time.perf_counter(); out = fn(); t = time.perf_counter() - t0
        best_t, best_m = min(best_t, t), min(best_m, m.growth)
    return best_t, best_m, out


def aligned_diff(ours, peer):
    """Max |A_ours - A_peer| after ordering the peer's nodes like ours, and the largest |edge|."""
    import torch
    feats = peer.active_features[peer.selected_features].tolist()
    L, T = ours.n_layers, ours.n_pos
    pid = ([("feature", *f) for f in feats] + [("error", l, p) for l in range(L) for p in range(T)]
           + [("token", p) for p in range(T)] + [("target", n) for n in ours.target_names])
    where = {n: i for i, n in enumerate(pid)}
    perm = torch.tensor([where[n] for n in ours.node_ids])
    A, B = ours.adjacency, peer.adjacency_matrix[perm][:, perm]
    return (A - B).abs().max().item(), B.abs().max().item()


def run_many(lm, tcs, n_prompts: int, batch_size: int, max_feature_nodes, peer_rm=None, peer_batch_size=None):
    """Several prompts, as the attribution stage runs them: ours with one encoder pass for all (`attribute_many`)
    against ours and circuit-tracer prompt by prompt."""
    from llm_biology.attribution import attribute, attribute_many
    texts = [TEXT, *MORE][:n_prompts]
    ids = [lm.encode(t)[:16] for t in texts]
    print(f"\n-- {len(ids)} prompts of {[len(i) for i in ids]} tokens")
    kw = dict(batch_size=batch_size, max_feature_nodes=max_feature_nodes)
    t_m, m_m, many = measure(lambda: attribute_many(lm, tcs, ids, **kw), 1)
    t_1, m_1, one = measure(lambda: [attribute(lm, tcs, i, **kw) for i in ids], 1)
    diff = max((a.edges - b.edges).abs().max().item() for a, b in zip(many, one))
    print(f"ours, attribute_many   : {t_m:8.3f} s  peak RSS +{m_m / 2**20:8.1f} MiB  ({t_m / len(ids):.2f} s per prompt)")
    print(f"ours, one at a time    : {t_1:8.3f} s  peak RSS +{m_1 / 2**20:8.1f} MiB  ({t_1 / len(ids):.2f} s per prompt); "
          f"attribute_many {t_1 / t_m:.1f}x faster, max |edge difference| {diff:.2g}")
    if peer_rm is not None:
        from circuit_tracer import attribute as ct_attribute
        t_p, m_p, _ = measure(lambda: [ct_attribute(i, peer_rm, batch_size=peer_batch_size or batch_size,
                                                    max_feature_nodes=max_feature_nodes) for i in ids], 1)
        print(f"circuit-tracer, each   : {t_p:8.3f} s  peak RSS +{m_p / 2**20:8.1f} MiB  ({t_p / len(ids):.2f} s per prompt); "
              f"speed-up of attribute_many {t_p / t_m:.1f}x")


def run_size(size, root, batch_size, peer_batch_size, repeats, peer, threads, max_feature_nodes=None, cache="warm",
             n_prompts=1, peer_many=False):
    import torch
    from llm_biology.attribution import attribute
    from llm_biology.models import load_model
    from llm_biology.transcoders import load_transcoders
    torch.set_num_threads(threads)
    model_dir, tc_dir = build(size, root)
    lm = load_model(str(model_dir), dtype=torch.float32)
    tcs = load_transcoders(tc_dir, lazy=size in REAL)   # full width: streamed, never all in memory
    ids = lm.encode(TEXT)[:16]
    print(f"\n== {size}: n_layers={lm.n_layers} d_model={lm.d_model} d_transcoder={tcs.d_transcoder} "
          f"n_pos={len(ids)} torch threads={torch.get_num_threads()}")

    rm = None
    if peer:
        from circuit_tracer import ReplacementModel, attribute as ct_attribute
        logging.getLogger("circuit_tracer").setLevel(logging.ERROR)
        if size in REAL:
            from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
            ct_tcs = load_transcoder_set({l: str(Path(tc_dir).resolve() / f"layer_{l}.safetensors") for l in range(lm.n_layers)},
                                         scan="bench", feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out",
                                         device=torch.device("cpu"), dtype=torch.float32, lazy_encoder=True, lazy_decoder=True)
            rm = ReplacementModel.from_pretrained_and_transcoders(str(model_dir), ct_tcs, backend="nnsight",
                                                                  device=torch.device("cpu"), dtype=torch.float32)
        else:
            rm = ReplacementModel.from_pretrained(str(model_dir), str(Path(tc_dir).resolve()), backend="nnsight",
                                                  device=torch.device("cpu"), dtype=torch.float32)
        if size not in REAL: ct_attribute(ids, rm, batch_size=peer_batch_size, max_n_logits=2)   # warm-up
    if size not in REAL: attribute(lm, tcs, ids, batch_size=batch_size, max_n_logits=2)           # warm-up

    # The page cache decides the full-width timings (each engine reads all 28 W_enc, 9.4 GB, per prompt), so both
    # engines start from the same state: `warm`, one untimed run of the same engine just before (the steady state
    # of a machine whose free memory holds the encoders); `cold`, the files dropped from the cache before each run.
    before = (lambda: drop_page_cache(tc_dir)) if size in REAL and cache == "cold" else (lambda: None)
    if size in REAL: print(f"page cache before each timed run: {cache}")
    if size in REAL and cache == "warm": attribute(lm, tcs, ids, batch_size=batch_size, max_feature_nodes=max_feature_nodes)
    t_o, m_o, g = measure(lambda: attribute(lm, tcs, ids, batch_size=batch_size, max_feature_nodes=max_feature_nodes), repeats,
                          before)
    print(f"active features {g.config['n_active']}, feature nodes {g.n_features}, nodes {g.n_nodes}, targets {g.n_targets}")
    print(f"ours          : {t_o:8.3f} s  peak RSS +{m_o / 2**20:8.1f} MiB  (batch_size={batch_size})")
    tm = g.config["timing"]
    parts = ["forward", "features_and_targets", "prefix_forward", "backward", "contract", "influence"]
    rest = tm["total"] - sum(tm[k] for k in parts)
    print("  our time    : " + ", ".join(f"{k} {tm[k]:.3f}s ({tm[k] / tm['total']:.0%})" for k in parts)
          + f", other {rest:.3f}s ({rest / tm['total']:.0%})")
    if peer:
        if size in REAL and cache == "warm": ct_attribute(ids, rm, batch_size=peer_batch_size, max_feature_nodes=max_feature_nodes)
        t_p, m_p, pg = measure(lambda: ct_attribute(ids, rm, batch_size=peer_batch_size, max_feature_nodes=max_feature_nodes), repeats,
                               before)
        print(f"circuit-tracer: {t_p:8.3f} s  peak RSS +{m_p / 2**20:8.1f} MiB  (batch_size={peer_batch_size})")
        d, scale = aligned_diff(g, pg)
        print(f"speed-up {t_p / t_o:.1f}x, memory ratio (theirs/ours) {m_p / max(m_o, 1):.1f}x, "
              f"max |adjacency difference| {d:.3g} (largest |edge| {scale:.3g}, relative {d / scale:.2g})")
    if n_prompts > 1: run_many(lm, tcs, n_prompts, batch_size, max_feature_nodes, rm if peer_many else None, peer_batch_size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=["tiny", "large", "both", *REAL], default="both")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--peer-batch-size", type=int, default=None, help="circuit-tracer's batch size (default: --batch-size)")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs per engine")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-feature-nodes", type=int, default=None, help="visit this many features in influence order (default: all)")
    p.add_argument("--no-peer", action="store_true", help="time ours only")
    p.add_argument("--n-prompts", type=int, default=1,
                   help="also attribute this many prompts (up to 8) with attribute_many against one at a time")
    p.add_argument("--peer-many", action="store_true", help="with --n-prompts: time circuit-tracer on them too (slow)")
    p.add_argument("--cache", choices=["warm", "cold"], default="warm",
                   help="qwen3 sizes: warm (an untimed run of the same engine first) or cold (files dropped from the page cache)")
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "llm_biology_bench_attribution"))
    a = p.parse_args(argv)
    sizes = ["tiny", "large"] if a.size == "both" else [a.size]
    for s in sizes:
        run_size(s, Path(a.root), a.batch_size, a.peer_batch_size or a.batch_size, a.repeats, not a.no_peer, a.threads,
                 a.max_feature_nodes, a.cache, a.n_prompts, a.peer_many and not a.no_peer)


if __name__ == "__main__":
    main()
