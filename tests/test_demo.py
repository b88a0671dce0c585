"""The shipped demo model and transcoders, loaded through the public loaders, do what the report claims."""
import pytest
import torch

from llm_biology.baseline import evaluate_behaviour
from llm_biology.core import BEHAVIOURS, get_model_spec
from llm_biology.models import capture_mlp, load_model
from llm_biology.prompts import generate_prompts
from llm_biology.reconstruction import reconstruction_metrics
from llm_biology.transcoders import check_fits, load_transcoders


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    lm = load_model("demo")
    tcs = load_transcoders("demo")
    check_fits(tcs, lm)
    return lm, tcs


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_demo_baseline_passes_on_held_out_prompts(demo, behaviour):
    lm, _ = demo
    res = evaluate_behaviour(lm, generate_prompts(behaviour, lm.tokenizer, seed=42).test, behaviour)
    assert res.passed, f"{behaviour}: accuracy {res.metrics['accuracy']:.2f} < {res.metrics['success_threshold']}"


def test_demo_transcoders_explain_held_out_mlp_outputs(demo):
    lm, tcs = demo
    texts = [r.prompt + r.correct_answer for b in BEHAVIOURS for r in generate_prompts(b, lm.tokenizer).test]
    cap = capture_mlp(lm, texts, positions="all")
    mask = cap.valid & (cap.positions > 0)  # the sink (position 0) is excluded, as everywhere
    for layer in range(lm.n_layers):
        m = reconstruction_metrics(tcs[layer], cap.inputs[layer], cap.outputs[layer], mask=mask)
        assert m.fve >= 0.8, f"layer {layer}: FVE {m.fve:.3f} on held-out prompts"
        assert 0 < m.l0 < tcs.d_transcoder / 4, f"layer {layer}: mean L0 {m.l0:.1f}"


@pytest.mark.peer
def test_demo_transcoders_load_in_circuit_tracer():
    from circuit_tracer import ReplacementModel
    spec = get_model_spec("demo")
    rm = ReplacementModel.from_pretrained(spec.model_ref(), spec.transcoder_ref(),
                                          backend="nnsight", dtype=torch.float32)
    assert rm.transcoders.n_layers == spec.n_layers
    assert rm.transcoders.d_transcoder == spec.d_transcoder
