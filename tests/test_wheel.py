"""The package runs from an installed wheel, in an empty folder, outside its checkout.

The wheel is built from the checkout and installed without dependencies into a fresh virtual
environment whose dependencies come from the development environment (a `.pth` line), so the test
needs no network and reuses what `make venv` installed.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sh(args, cwd, env=None, timeout=900):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_wheel_runs_in_an_empty_folder(tmp_path):
    t0 = time.time()
    dist, src = tmp_path / "dist", tmp_path / "src"   # built from a copy: no stale build/ of the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "data", "_site", "_docs", "_proc",
                                                             ".cache", "*.egg-info", "__pycache__", ".pytest_cache"))
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], src)
    wheel = next(dist.glob("llm_biology-*.whl"))
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    (_site_packages(venv) / "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", "-q", wheel],
        tmp_path)

    work = tmp_path / "project"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    # the dependencies' data files (nbconvert's templates) stay where `make venv` put them
    env.update(HF_HUB_OFFLINE="1", JUPYTER_DATA_DIR=str(tmp_path / "jupyter"), JUPYTER_PATH=f"{sys.prefix}/share/jupyter",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = _sh([venv / "bin" / "python", "-c", "import llm_biology; print(llm_biology.__file__)"], work, env)
    assert str(_site_packages(venv)) in where, f"llm_biology imported from {where.strip()}, not the wheel"

    _sh(["llm-biology", "run", "--n-prompts", "2", "--no-render"], work, env)
    _sh(["llm-biology", "render"], work, env)
    stages = json.loads((work / "data" / "demo" / "run.json").read_text())["stages"]
    assert set(stages) == {"prompts", "baseline", "features", "attribution", "interventions"}
    for name in ("01_prompts", "02_baseline", "03_features", "04_attribution", "05_interventions"):
        assert (work / "data" / "demo" / "notebooks" / f"{name}.ipynb").is_file(), name
    assert (work / "_site" / "index.html").is_file()
    assert (work / "_site" / "reports" / "demo.html").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["_site", "data"], "the run wrote outside data/ and _site/"
    print(f"wheel build, install, run (5 stages, 2 prompts) and render: {time.time() - t0:.1f} s")
