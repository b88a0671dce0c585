"""Our feature ablations equal circuit-tracer 0.5.0's `ReplacementModel.feature_intervention` on the tiny model.

Same model folder, same ABSOLUTE transcoder folder, same token ids (the sink token written out as
`<|endoftext|>` so circuit-tracer's string path sees exactly our ids), in its three regimes: free,
frozen attention, and constrained layers (direct effects), for JumpReLU, ReLU and skip transcoders.
Skipped when circuit-tracer is not installed (the `peer` extra).
"""
from pathlib import Path

import pytest

pytestmark = pytest.mark.peer

REGIMES = {"free": dict(freeze_attention=False), "frozen": dict(freeze_attention=True),
           "direct": dict(constrained_layers=range(2))}


@pytest.fixture(scope="module")
def setup():
    import torch
    torch.set_num_threads(1)
    from llm_biology.testing import tiny_hub
    from llm_biology.models import load_model
    hub = tiny_hub()
    lm = load_model(hub.model_id, cache_dir=hub.cache_dir)
    return hub, lm


def _replacement_model(hub, variant):
    import torch
    from circuit_tracer import ReplacementModel
    return ReplacementModel.from_pretrained(str(hub.folders["model"]), str(Path(hub.folders[variant]).resolve()),
                                            backend="nnsight", device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize("variant", ["jumprelu", "relu", "skip"])
def test_single_feature_ablation_matches_circuit_tracer(setup, variant):
    import torch
    from llm_biology.edits import edited_logits, feature_edit
    from llm_biology.models import capture_mlp
    from llm_biology.transcoders import load_transcoders
    hub, lm = setup
    tcs = load_transcoders(hub.transcoder_ids[variant], cache_dir=hub.cache_dir)
    rm = _replacement_model(hub, variant)
    text = "The capital of France is"
    ids = lm.encode(text)
    assert rm.tokenizer("<|endoftext|>" + text).input_ids == ids.tolist()
    for layer in (0, 1):
        acts = tcs[layer].encode(capture_mlp(lm, [ids], layers=[layer]).inputs[layer][0])
        pos = int(acts[1:].amax(-1).argmax()) + 1
        f = int(acts[pos].argmax())
        assert acts[pos, f] > 0
        edit = feature_edit(layer, pos, f, "zero")
        for name, kw in REGIMES.items():
            theirs, _ = rm.feature_intervention("<|endoftext|>" + text, [(layer, pos, f, 0.0)], **kw)
            ours = edited_logits(lm, tcs, ids, [[edit]], **kw)[0]
            assert (ours - theirs[0]).abs().max().item() <= 1e-4, (variant, layer, name)
            assert (ours - lm.model(ids[None]).logits[0]).abs().max().item() > 1e-4  # the ablation does something


def test_batched_ablation_logit_diffs_match_circuit_tracer_loop(setup):
    """`ablate_features` (one batched run over prompts x feature sets) equals circuit-tracer one call at a time."""
    import numpy as np
    import torch
    from llm_biology.interventions import ablate_features
    from llm_biology.models import answer_tokens, capture_mlp
    from llm_biology.prompts import PromptRecord
    from llm_biology.transcoders import load_transcoders
    hub, lm = setup
    tcs = load_transcoders(hub.transcoder_ids["jumprelu"], cache_dir=hub.cache_dir)
    rm = _replacement_model(hub, "jumprelu")
    recs = [PromptRecord("The capital of France is", " Paris", " Rome", "factual_recall", "test", "fact"),
            PromptRecord("The cat is in the", " room", " door", "grammar_agreement", "test", "singular"),
            PromptRecord("12 + 45 =", " 57", " 58", "arithmetic", "test", "sum")]
    acts = tcs[1].encode(capture_mlp(lm, [lm.encode(r.prompt) for r in recs], layers=[1]).inputs[1])
    top = torch.topk(acts[:, 1:].amax((0, 1)), 3).indices.tolist()
    sets = [[(1, top[0])], [(1, f) for f in top], [(0, 7), (1, top[1])]]
    out = ablate_features(lm, tcs, recs, sets)
    for i, r in enumerate(recs):
        at = answer_tokens(lm.tokenizer, r.prompt, r.correct_answer, r.incorrect_answer)
        text = lm.tokenizer.decode(at.context)
        assert rm.tokenizer(text).input_ids == at.context
        for k, fs in enumerate(sets):
            ivs = [(l, p, f, 0.0) for l, f in fs for p in range(1, len(at.context))]
            logits, _ = rm.feature_intervention(text, ivs, freeze_attention=False)
            ld = (logits[0, -1, at.correct_id] - logits[0, -1, at.incorrect_id]).item()
            assert abs(out.intervened[k, i] - ld) <= 1e-4, (r.prompt, fs)
    assert np.abs(out.drops).max() > 1e-4
