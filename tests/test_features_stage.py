"""The features stage end to end: `run_pipeline` runs the prompts and features templates on the tiny
model through the offline hub cache, and the spec's files appear."""
from pathlib import Path


def test_pipeline_prompts_and_features_end_to_end(tmp_path, monkeypatch):
    import numpy as np
    from llm_biology.testing import tiny_hub
    from llm_biology import cli
    from llm_biology.cli import run_pipeline
    from llm_biology.core import RunConfig, model_paths, read_json, BEHAVIOURS
    hub = tiny_hub()
    # Freeze the package-source digest: in a shared working tree another export between the two runs
    # would (rightly) re-run the stages; here we test that unchanged inputs are skipped.
    digest = cli.code_digest()
    monkeypatch.setattr(cli, "code_digest", lambda: digest)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub.cache_dir))  # the papermill kernel inherits these
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig(model=hub.model_id, transcoders=hub.transcoder_ids["jumprelu"], data_dir=str(tmp_path), n_prompts=3)
    res = run_pipeline(cfg, "prompts,features", log=lambda s: None)
    assert [s.status for s in res.stages] == ["ran", "ran"]
    feats = model_paths(cfg.model, cfg.data_dir).features
    for b in BEHAVIOURS:
        s = read_json(feats / f"{b}_test_summary.json")
        assert [d["layer"] for d in s["layers"]] == [0, 1] and s["n_prompts"] == 3
        for l in (0, 1):
            idx = np.load(feats / f"layer_{l}" / f"{b}_test_top_k_indices.npy")
            meta = read_json(feats / f"layer_{l}" / f"{b}_test_layer_meta.json")
            assert idx.shape == (meta["n_samples"], 50) and min(meta["samples"]["pos"]) >= 1
            fr = np.load(feats / f"layer_{l}" / f"{b}_test_feature_frequencies.npy")
            assert fr.shape == (256,) and 0 <= fr.min() and fr.max() <= 1
    figs = res.root / "results" / "figures"
    assert (figs / "features_l0_fve_test.png").is_file()
    assert all((figs / f"features_contrast_{b}_test.png").is_file() for b in BEHAVIOURS)
    assert [s.status for s in run_pipeline(cfg, "prompts,features", log=lambda s: None).stages] == ["skipped", "skipped"]
