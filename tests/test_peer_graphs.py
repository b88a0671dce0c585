"""Peer tests of `llm_biology.graphs` against circuit-tracer 0.5.0 on the tiny model: pruning masks,
cumulative scores, replacement/completeness scores and the viewer JSON are circuit-tracer's own.

Two graphs are checked: circuit-tracer's graph of a prompt (top logits as targets), and our engine's
graph of a behaviour record (correct-minus-incorrect target plus the two logits) wrapped in a
circuit-tracer `Graph`. Skipped when circuit-tracer is not installed (the `peer` extra).
"""
import json
import logging

import pytest
import torch

pytestmark = pytest.mark.peer
THRESHOLDS = [(0.8, 0.98), (0.5, 0.9), (0.95, 0.999), (1.0, 1.0), (0.0, 0.5)]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    logging.getLogger("circuit_tracer").setLevel(logging.ERROR)
    from circuit_tracer import ReplacementModel
    from llm_biology.testing import tiny_hub
    from llm_biology.models import load_model
    from llm_biology.transcoders import load_transcoders
    hub = tiny_hub()
    rm = ReplacementModel.from_pretrained(str(hub.folders["model"]), str(hub.folders["jumprelu"].resolve()),
                                          backend="nnsight", device=torch.device("cpu"), dtype=torch.float32)
    lm = load_model(hub.model_id, cache_dir=hub.cache_dir)
    tcs = load_transcoders(hub.transcoder_ids["jumprelu"], cache_dir=hub.cache_dir)
    return rm, lm, tcs


@pytest.fixture(scope="module")
def ct_graph(tiny):
    "circuit-tracer's own graph of a prompt (explicit ids, sink first)."
    from circuit_tracer import attribute
    rm, _, _ = tiny
    ids = [rm.tokenizer.convert_tokens_to_ids("<|endoftext|>")] + rm.tokenizer(
        "The capital of Spain is", add_special_tokens=False).input_ids
    return attribute(torch.tensor(ids), rm, batch_size=64, verbose=False)


@pytest.fixture(scope="module")
def engine_graph(tiny, ct_graph):
    "Our engine's graph of a behaviour record, as (our AttributionGraph, the same arrays in a circuit-tracer Graph)."
    from circuit_tracer.graph import Graph
    from circuit_tracer.attribution.targets import LogitTarget
    from llm_biology import attribution
    from llm_biology.graphs import as_graph
    from llm_biology.prompts import generate_prompts
    _, lm, tcs = tiny
    rec = generate_prompts("factual_recall", lm.tokenizer, n_train=0, n_test=2).test[1]
    bt = attribution.behaviour_targets(lm, rec)
    g = attribution.attribute(lm, tcs, bt.input_ids, targets=bt.targets, max_feature_nodes=100)
    gd = as_graph(g, lm.tokenizer)
    targets = [LogitTarget(n, t if t is not None else gd.vocab_size + k)
               for k, (n, t) in enumerate(zip(g.target_names, g.target_token_ids))]
    ct = Graph(gd.prompt, g.input_ids, g.active_features, gd.adjacency, ct_graph.cfg, g.selected_features,
               g.activation_values, targets, g.target_weights, scan="tiny", vocab_size=gd.vocab_size)
    return gd, ct


def _check_same_pruning(gd, ct):
    from circuit_tracer.graph import prune_graph, compute_graph_scores
    from llm_biology.graphs import prune, graph_scores
    for nt, et in THRESHOLDS:
        theirs, ours = prune_graph(ct, nt, et), prune(gd, nt, et)
        assert torch.equal(ours.node_mask, theirs.node_mask), (nt, et)
        assert torch.equal(ours.edge_mask, theirs.edge_mask), (nt, et)
        torch.testing.assert_close(ours.cumulative, theirs.cumulative_scores)
    assert graph_scores(gd) == pytest.approx(compute_graph_scores(ct), abs=1e-6)


def _check_same_viewer_json(gd, ct, tmp_path):
    from circuit_tracer.frontend.graph_models import Model
    from circuit_tracer.utils.create_graph_files import create_graph_files
    from llm_biology.viewer import frontend_graph, write_frontend_graph
    create_graph_files(ct, "g", str(tmp_path / "ref"), scan="tiny")
    ref = json.loads((tmp_path / "ref" / "g.json").read_text())
    fixed = {n["node_id"]: f"{n['layer']}_-1_{n['ctx_idx']}" for n in ref["nodes"] if n["feature_type"] == "mlp reconstruction error"}
    for n in ref["nodes"]:  # 0.5.0's error ids ("0_{layer}_{pos}", which collide with features), as circuit-tracer's fix writes them
        if n["node_id"] in fixed: n.update(node_id=fixed[n["node_id"]], jsNodeId=f"{n['layer']}_-1-{n['ctx_idx']}")
    ref["links"] = [{**l, "source": fixed.get(l["source"], l["source"]), "target": fixed.get(l["target"], l["target"])}
                    for l in ref["links"]]
    path = write_frontend_graph(frontend_graph(gd, slug="g", scan="tiny"), tmp_path / "ours" / "g.json")
    ours = Model.model_validate(json.loads(path.read_text())).model_dump()  # circuit-tracer's pydantic model accepts it
    assert {n["node_id"]: n for n in ours["nodes"]} == {n["node_id"]: n for n in ref["nodes"]}
    assert ({(l["source"], l["target"]): l["weight"] for l in ours["links"]}
            == {(l["source"], l["target"]): l["weight"] for l in ref["links"]})
    assert ours["metadata"] == ref["metadata"]
    index = json.loads((tmp_path / "ours" / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["g"]


def test_prune_and_scores_on_circuit_tracer_graph(tiny, ct_graph):
    from llm_biology.graphs import as_graph
    _check_same_pruning(as_graph(ct_graph, tiny[0].tokenizer), ct_graph)


def test_viewer_json_on_circuit_tracer_graph(tiny, ct_graph, tmp_path):
    from llm_biology.graphs import as_graph
    _check_same_viewer_json(as_graph(ct_graph, tiny[0].tokenizer), ct_graph, tmp_path)


def test_prune_and_scores_on_engine_behaviour_graph(engine_graph):
    gd, ct = engine_graph
    assert gd.target_weights.tolist() == [1.0, 0.0, 0.0]  # the logit difference alone steers pruning
    _check_same_pruning(gd, ct)


def test_viewer_json_on_engine_behaviour_graph(engine_graph, tmp_path):
    gd, ct = engine_graph
    _check_same_viewer_json(gd, ct, tmp_path)


def test_stage_viewer_json_has_supernodes_and_validates(tmp_path):
    "The attribution stage's viewer JSONs carry the catalog's supernodes and labels and pass circuit-tracer's model."
    from circuit_tracer.frontend.graph_models import Model
    from llm_biology.figures import make_tiny_run
    from llm_biology.interpret import read_catalog
    root = make_tiny_run(tmp_path / "data", behaviours=("grammar_agreement",))
    folder = root / "results" / "attribution_graphs" / "grammar_agreement"
    cat = {f"{l}_{f}" for c in [read_catalog(root / "results" / "features_catalog" / "grammar_agreement_circuit.json")]
           for l, f in ((x["layer"], x["feature_idx"]) for x in c["features"])}
    files = sorted(folder.glob("*_frontend.json"))
    assert len(files) == 4
    with_sn = 0
    for f in files:
        m = Model.model_validate(json.loads(f.read_text()))
        ids = {n.node_id for n in m.nodes}
        assert all(x in ids for s in m.qParams.supernodes for x in s[1:]), f"{f.name}: a supernode names a node not in the graph"
        holds = any(n.node_id.rsplit("_", 1)[0] in cat for n in m.nodes if n.feature_type == "cross layer transcoder")
        assert bool(m.qParams.supernodes) == holds, f"{f.name}: supernodes {m.qParams.supernodes}, holds a catalog feature: {holds}"
        with_sn += holds
    assert with_sn >= 1


def test_demo_viewer_json_validates():
    "Every viewer JSON of the committed demo run passes circuit-tracer's model and names its supernodes."
    from pathlib import Path
    from circuit_tracer.frontend.graph_models import Model
    files = sorted((Path(__file__).resolve().parents[1] / "data" / "demo").glob("results/attribution_graphs/*/*_frontend.json"))
    if not files: pytest.skip("no committed demo run")
    for f in files:
        m = Model.model_validate(json.loads(f.read_text()))
        assert m.qParams.supernodes, f"{f.name}: no supernodes"
