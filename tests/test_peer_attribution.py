"""Our attribution graphs equal circuit-tracer 0.5.0's (nnsight backend) on the tiny Qwen3 and tiny transcoder sets.

Same model folder, same transcoder folder, same token ids (sink first, so neither engine prepends a
token). Node orders are aligned explicitly by node id before comparing the dense adjacencies.
"""
import logging
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.peer
pytest.importorskip("circuit_tracer")

from llm_biology.attribution import AttributionGraph, Target, attribute, behaviour_targets  # noqa: E402
from llm_biology.models import load_model  # noqa: E402
from llm_biology.testing import TINY_SHAPE, make_random_transcoders, tiny_hub  # noqa: E402
from llm_biology.transcoders import load_transcoders  # noqa: E402

TOL = 1e-4  # max |difference| relative to the largest |edge|


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    logging.getLogger("circuit_tracer").setLevel(logging.ERROR)
    hub = tiny_hub()
    folders = dict(hub.folders)
    folders["relu_skip"] = make_random_transcoders(tmp_path_factory.mktemp("tc") / "relu-skip", **TINY_SHAPE,
                                                   activation="relu", skip=True, seed=11)
    lm = load_model(str(hub.folders["model"]))
    ids = lm.encode("The capital of France is Paris. The capital of")
    assert ids[0].item() in lm.tokenizer.all_special_ids  # so circuit-tracer prepends nothing
    return lm, folders, ids


def peer_graph(model_dir, tc_dir, ids, targets=None, **kw):
    from circuit_tracer import ReplacementModel, attribute as ct_attribute
    rm = ReplacementModel.from_pretrained(str(model_dir), str(Path(tc_dir).resolve()), backend="nnsight",
                                          device=torch.device("cpu"), dtype=torch.float32)
    return ct_attribute(ids, rm, attribution_targets=targets, **kw)


def aligned(ours: AttributionGraph, peer):
    """Both dense adjacencies, rows and columns in our node order (targets matched by position)."""
    feats = peer.active_features[peer.selected_features].tolist()
    L, T = ours.n_layers, ours.n_pos
    pid = ([("feature", *f) for f in feats] + [("error", l, p) for l in range(L) for p in range(T)]
           + [("token", p) for p in range(T)] + [("target", n) for n in ours.target_names])
    where = {n: i for i, n in enumerate(pid)}
    assert len(where) == len(pid) == ours.n_nodes
    perm = torch.tensor([where[n] for n in ours.node_ids])
    return ours.adjacency, peer.adjacency_matrix[perm][:, perm]


def check(ours: AttributionGraph, peer):
    assert ours.feature_nodes.tolist() == peer.active_features[peer.selected_features].tolist()
    assert torch.equal(ours.active_features, peer.active_features.cpu())
    torch.testing.assert_close(ours.activation_values, peer.activation_values.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.target_weights, peer.logit_probabilities.float().cpu(), rtol=1e-5, atol=1e-7)
    A, B = aligned(ours, peer)
    rel = ((A - B).abs().max() / B.abs().max()).item()
    assert rel <= TOL, rel
    return rel


@pytest.mark.parametrize("variant", ["jumprelu", "relu", "skip", "relu_skip"])
@pytest.mark.parametrize("max_feature_nodes", [None, 60])
def test_same_adjacency(setup, variant, max_feature_nodes):
    lm, folders, ids = setup
    pg = peer_graph(folders["model"], folders[variant], ids, batch_size=32, max_feature_nodes=max_feature_nodes)
    og = attribute(lm, load_transcoders(folders[variant]), ids, batch_size=32, max_feature_nodes=max_feature_nodes)
    assert list(og.target_token_ids) == [t.vocab_idx for t in pg.logit_targets]
    check(og, pg)


def test_token_and_custom_targets(setup):
    from circuit_tracer.attribution.targets import CustomTarget
    lm, folders, ids = setup
    class Rec:  # a behaviour record
        prompt, correct_answer, incorrect_answer = "12 + 45 =", " 57", " 58"
    bt = behaviour_targets(lm, Rec)
    tcs = load_transcoders(folders["skip"])
    og = attribute(lm, tcs, bt.input_ids, bt.targets, batch_size=16)
    custom = [CustomTarget(n, 1.0 if w == 0 else w, v) for n, v, w in
              zip(og.target_names, og.target_directions, og.target_weights.tolist())]
    pg = peer_graph(folders["model"], folders["skip"], bt.input_ids, custom, batch_size=16)
    og = attribute(lm, tcs, bt.input_ids, [Target(t.token_str, t.vec, t.prob) for t in custom], batch_size=16)
    check(og, pg)
    pg = peer_graph(folders["model"], folders["skip"], bt.input_ids, torch.tensor([bt.correct_id, bt.incorrect_id]), batch_size=16)
    og = attribute(lm, tcs, bt.input_ids, [bt.correct_id, bt.incorrect_id], batch_size=16)
    check(og, pg)
