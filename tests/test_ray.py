"""The Ray backend on the demo model: a Ray run writes a local run's bytes, with a worker killed mid-run and a
stage's driver killed and the run resumed (keeping its finished units).

The test starts a Ray cluster of 2 CPUs on 127.0.0.1 and stops it at the end; the runs are `llm-biology run`
processes pointed at it with --address. OMP_NUM_THREADS=1 in every run (local and Ray), so each worker takes one
of the 2 CPUs: a worker's torch uses as many threads as its driver's, and the bytes depend on that number.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the `ray` extra")
psutil = pytest.importorskip("psutil")

ARGS = ["--n-prompts", "2", "--behaviours", "grammar_agreement,factual_recall", "--max-feature-nodes", "32",
        "--n-control-draws", "1", "--include-failed", "--no-render"]   # --include-failed: no baseline stage needed
HEAVY = "features,attribution,interventions"
# What a Ray run writes differently from a local run, and why (everything else must be byte-identical):
EXCLUDED = (
    "notebooks/",   # executed notebooks: papermill's timings, Ray's log lines, the units line, the config cell (backend)
    "run.json",     # the run record: the config (backend, address), wall times and finish times of the stages
    "stages/",      # each stage's own record: its wall time and peak memory
    "results/features_catalog/corpus_scan.npz",   # the local backend's scan cache (Ray workers write no files)
)
ATTRIBUTION = ("results/attribution_graphs/", "results/figures/attribution_")


def _cli(cwd: Path, *args, check=True, popen=False):
    cmd = [sys.executable, "-c", "import sys; from llm_biology.cli import main; sys.exit(main(sys.argv[1:]))",
           "run", *ARGS, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    if popen:   # output to a file: a pipe nobody reads could fill and block the run
        with open(cwd / "cli.log", "w") as log:
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check: assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _files(folder: Path) -> dict:
    root = folder / "data" / "demo"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _differing(a: dict, b: dict, prefixes=None) -> list:
    names = [f for f in a if not f.startswith(EXCLUDED) and (prefixes is None or f.startswith(prefixes))]
    return [f for f in names if a[f] != b.get(f)]


def _shown(nb: Path) -> dict:
    "Cell index -> the tables, figures and text a notebook shows (stream outputs aside)."
    cells = json.loads(nb.read_text())["cells"]
    return {i: [o["data"] for o in c.get("outputs", []) if o["output_type"] in ("display_data", "execute_result")]
            for i, c in enumerate(cells) if c["cell_type"] == "code"}


def _units_line(nb: Path) -> str:
    text = "".join("".join(o.get("text", "")) for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", [])
                   if o["output_type"] == "stream")
    m = re.search(r"^\w+: \d+ unit\(s\), .*$", text, re.M)
    return m.group(0) if m else ""


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from llm_biology.distributed import local_cluster
    root = tmp_path_factory.mktemp("ray")
    base = root / "base"; base.mkdir()
    _cli(base, "--stages", "prompts")
    local = _copy(base, root / "local")
    t0 = time.time(); _cli(local, "--stages", HEAVY); local_s = time.time() - t0
    if ray.is_initialized(): ray.shutdown()
    with local_cluster(num_cpus=2) as address:
        assert address.startswith("127.0.0.1:"), address
        yield SimpleNamespace(root=root, base=base, local=local, local_files=_files(local), address=address, local_s=local_s)
    assert not ray.is_initialized()


def _descendants(pid=None) -> list:
    "(pid, command line) of the processes under `pid` (this process by default)."
    out = []
    for q in psutil.Process(pid).children(recursive=True):
        try: out.append((q.pid, " ".join(q.cmdline())))
        except psutil.Error: pass
    return out


def test_ray_run_writes_the_local_files_with_a_worker_killed_and_resumes_after_its_driver_is_killed(runs):
    """One Ray run of the three stages: a worker is killed (SIGKILL) while it runs an attribution unit, and the stage
    goes on; the interventions stage's driver (its kernel) is killed once one of its two units is kept, which ends the
    run; the same command again skips the finished stages and runs only the missing unit. Then every result file is
    the local run's, byte for byte."""
    d = _copy(runs.base, runs.root / "ray")
    stages, kept_dir = d / "data" / "demo" / "stages", d / "data" / "demo" / "units" / "interventions"
    t0 = time.time()
    p = _cli(d, "--stages", HEAVY, "--backend", "ray", "--address", runs.address, popen=True)
    killed, attribution_workers, kernel_killed = None, set(), False
    while p.poll() is None and time.time() - t0 < 600:
        if (stages / "features.json").exists() and not (stages / "attribution.json").exists():   # attribution runs
            for pid, title in _descendants():
                if title.startswith("ray::UnitWorker"): attribution_workers.add(pid)
                if killed is None and title.startswith("ray::UnitWorker.run"):   # busy with a unit
                    os.kill(pid, signal.SIGKILL); killed = pid
        if not kernel_killed and any(kept_dir.glob("*.pkl")):   # interventions: one unit kept, the other running
            for pid, title in _descendants(p.pid):
                if "ipykernel" in title: os.kill(pid, signal.SIGKILL); kernel_killed = True
        time.sleep(0.05)
    p.wait(timeout=120)
    log = (d / "cli.log").read_text()
    assert killed is not None, f"no worker was seen running an attribution unit\n{log}"
    assert len(attribution_workers) >= 3, f"the killed worker was not restarted (pids {sorted(attribution_workers)})"
    assert kernel_killed and p.returncode != 0 and "interventions" in log, log
    assert "attribution: Step 4" in log and (stages / "attribution.json").exists(), log   # attribution finished
    kept = len(list(kept_dir.glob("*.pkl")))
    assert kept >= 1
    again = _cli(d, "--stages", HEAVY, "--backend", "ray", "--address", runs.address)
    assert again.stdout.count("up to date, skipped") == 2, again.stdout   # features and attribution
    print(f"features, attribution, interventions: local {runs.local_s:.1f} s; Ray, both runs, {time.time() - t0:.1f} s")
    assert _units_line(d / "data/demo/notebooks/04_attribution.ipynb") == \
        "attribution: 2 unit(s), 2 run on 2 Ray worker(s), 0 kept from an earlier try"   # one per behaviour, then the catalog
    assert _units_line(d / "data/demo/notebooks/05_interventions.ipynb") == \
        f"interventions: 2 unit(s), {2 - kept} run on {min(1, 2 - kept)} Ray worker(s), {kept} kept from an earlier try"
    a, b = runs.local_files, _files(d)
    names = lambda x: sorted(f for f in x if not f.startswith(EXCLUDED[3:]))
    assert names(a) == names(b), f"other files: {sorted(set(a) ^ set(b))}"   # the same names, no units/ left behind
    compared = [f for f in a if not f.startswith(EXCLUDED)]
    assert len(compared) >= 90 and any(f.endswith(".npy") for f in compared) and any(f.endswith(".png") for f in compared)
    assert sum(f.startswith(ATTRIBUTION) for f in compared) >= 30
    assert not _differing(a, b), f"differ: {_differing(a, b)}"
    rec = lambda f: json.loads(f)["stages"]
    for st in HEAVY.split(","):   # the outputs each stage recorded
        assert rec(a["run.json"])[st]["outputs"] == rec(b["run.json"])[st]["outputs"]
    assert json.loads(b["run.json"])["config"]["backend"] == "ray"
    for nb in ("03_features", "04_attribution", "05_interventions"):   # the same tables and figures, the config cell aside
        sa, sb = _shown(runs.local / "data/demo/notebooks" / f"{nb}.ipynb"), _shown(d / "data/demo/notebooks" / f"{nb}.ipynb")
        assert sa.keys() == sb.keys()
        assert [i for i in sa if sa[i] != sb[i]] == [4], nb   # cell 4 shows the RunConfig (backend='ray', address)
