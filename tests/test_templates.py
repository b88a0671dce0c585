"""The papermill templates in circuit_nbs/: their parameters are RunConfig's, they hold no library logic
and no outputs, the package ships exact copies of them; and end-to-end runs on the tiny model through
the offline hub cache (the runner, and papermill directly)."""
import ast
import json
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "circuit_nbs").glob("*.ipynb"))
BEHAVIOURS = ("grammar_agreement", "factual_recall", "sentiment_continuation", "arithmetic")


def _code(cell) -> str:
    "A cell's source without IPython magics and shell escapes (which `ast` cannot parse)."
    return "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!")))


def test_templates_are_the_stages():
    from llm_biology.cli import STAGES
    assert {p.name for p in TEMPLATES} == {s.template for s in STAGES}


def test_shipped_templates_equal_the_sources():
    "The package's copies (what an installed wheel runs) are byte for byte the templates of circuit_nbs/ (`make export`)."
    from llm_biology.cli import templates_dir
    shipped = {p.name: p.read_bytes() for p in templates_dir().glob("*.ipynb")}
    assert shipped == {p.name: p.read_bytes() for p in TEMPLATES}, "run `make export` to refresh llm_biology/assets/templates"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_parameters_are_runconfig(template):
    "One `parameters` cell, exactly `parameters_source()`: every RunConfig field with its production default."
    import papermill as pm
    from llm_biology.cli import check_template_parameters, parameters_source
    from llm_biology.core import RunConfig
    check_template_parameters(template)
    nb = nbformat.read(template, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code" and tagged[0].source == parameters_source()
    declared = pm.inspect_notebook(str(template))
    for f in fields(RunConfig):
        want = getattr(RunConfig(), f.name)
        assert ast.literal_eval(declared[f.name.upper()]["default"]) == (list(want) if isinstance(want, tuple) else want)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_has_no_logic_and_no_outputs(template):
    nb = nbformat.read(template, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{template.name}: kernelspec must be python3"
    assert any(c.cell_type == "markdown" and c.source.lstrip().startswith("# ") for c in nb.cells), \
        f"{template.name}: needs a markdown title (it becomes a report page)"
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code": continue
        assert not c.get("outputs") and c.get("execution_count") is None, \
            f"{template.name}, cell {i}: stored outputs; clear them (make export)"
        for node in ast.walk(ast.parse(_code(c))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), \
                f"{template.name}, cell {i}: defines a function or class; move it into the package"
            assert not isinstance(node, (ast.If, ast.IfExp)), \
                f"{template.name}, cell {i}: branches (`if`); templates only call the package"


@pytest.fixture
def tiny_env(monkeypatch):
    from llm_biology.testing import tiny_hub
    from llm_biology import cli
    hub = tiny_hub()
    # Freeze the package-source digest: in a shared working tree another export between the two runs
    # would (rightly) re-run the stages; here we test that unchanged inputs are skipped.
    digest = cli.code_digest()
    monkeypatch.setattr(cli, "code_digest", lambda: digest)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub.cache_dir))  # the papermill kernel inherits these
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_pipeline_prompts_and_baseline_end_to_end(tmp_path, tiny_env):
    "`run_pipeline` runs both templates on the tiny model (loaded through the offline hub), then skips them."
    from llm_biology.cli import run_pipeline
    from llm_biology.baseline import read_baseline_metrics
    from llm_biology.core import RunConfig, model_paths, read_run_record
    cfg = RunConfig(model=tiny_env.model_id, data_dir=str(tmp_path), n_prompts=3)
    res = run_pipeline(cfg, "prompts,baseline", log=lambda s: None)
    assert [s.status for s in res.stages] == ["ran", "ran"]
    paths = model_paths(cfg.model, cfg.data_dir)
    expected = [paths.prompt_file(b, s) for b in BEHAVIOURS for s in ("train", "test")]
    expected += [paths.results / f"baseline_{b}_test.csv" for b in BEHAVIOURS]
    expected += [paths.results / "baseline_metrics_test.json", paths.figures / "baseline_diff_distributions_test.png",
                 paths.figures / "baseline_accuracy_test.png",
                 paths.notebooks / "01_prompts.ipynb", paths.notebooks / "02_baseline.ipynb"]
    missing = [str(p.relative_to(tmp_path)) for p in expected if not p.is_file()]
    assert not missing, f"missing outputs: {missing}"
    metrics = read_baseline_metrics(paths.results / "baseline_metrics_test.json")
    assert sorted(metrics) == sorted(BEHAVIOURS)
    for b, m in metrics.items():
        assert m["n_prompts"] == 3 and m["decision"] in ("PASS", "FAIL") and 0 <= m["accuracy"] <= 1, (b, m)
    for png in paths.figures.glob("baseline_*.png"): assert png.read_bytes()[:4] == b"\x89PNG"
    executed = nbformat.read(paths.notebooks / "02_baseline.ipynb", as_version=4)
    shown = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in shown) == 2, "the two figures are shown inline"
    rec = read_run_record(paths.run_json)
    assert rec["stages"]["baseline"]["peak_rss_mb"] > 50, "the stage's peak memory is recorded"
    again = run_pipeline(cfg, "prompts,baseline", log=lambda s: None)
    assert [s.status for s in again.stages] == ["skipped", "skipped"]


def test_papermill_parameter_reaches_the_stage(tmp_path, tiny_env):
    "papermill on a template with `-p MAX_FEATURE_NODES 8` runs, and the attribution graphs obey the cap."
    import papermill as pm
    import pandas as pd
    from llm_biology.cli import run_pipeline, templates_dir
    from llm_biology.core import RunConfig, model_paths
    cfg = RunConfig(model=tiny_env.model_id, data_dir=str(tmp_path), n_prompts=2, behaviours=("factual_recall",),
                    include_failed=True, transcoders=tiny_env.transcoder_ids["jumprelu"])
    run_pipeline(cfg, "prompts,baseline", log=lambda s: None)
    scores = model_paths(cfg.model, cfg.data_dir).attribution / "factual_recall" / "scores_test.csv"
    n_nodes = {}
    for cap in (8, 64):
        pm.execute_notebook(str(ROOT / "circuit_nbs" / "04_attribution.ipynb"), str(tmp_path / f"out{cap}.ipynb"), kernel_name="python3",
                            parameters=dict(MODEL=cfg.model, TRANSCODERS=cfg.transcoders, DATA_DIR=str(tmp_path), N_PROMPTS=2,
                                            BEHAVIOURS=["factual_recall"], INCLUDE_FAILED=True, MAX_FEATURE_NODES=cap),
                            progress_bar=False, cwd=str(tmp_path))
        n_nodes[cap] = pd.read_csv(scores).n_feature_nodes.tolist()
    assert max(n_nodes[8]) <= 8 < max(n_nodes[64]), n_nodes   # the parameter changed the result
