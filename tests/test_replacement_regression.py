"""Attribution and feature edits share one local replacement model: in one process, a frozen-attention
edit gives the same logits whether or not `attribute` ran before it, in either order.

Each order runs in a fresh interpreter (the bug was process-global state: two attention functions
registered under one name with transformers, the last registration winning)."""
import json
import subprocess
import sys

SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
from llm_biology.models import load_model, capture_mlp
from llm_biology.transcoders import load_transcoders
from llm_biology.attribution import attribute
from llm_biology.edits import FeatureEdit, edited_logits
lm, tcs = load_model("demo"), load_transcoders("demo")
ids = lm.encode("The cats in the room")
edits = []
for layer in (1, 2):   # the two most active features at the last position of layers 1 and 2, scaled 5x
    acts = tcs[layer].encode(capture_mlp(lm, [ids], layers=[layer]).inputs[layer][0, -1])
    edits.append(FeatureEdit(layer, -1, int(acts.argmax()), 5.0, 0.0))
def edit():
    return edited_logits(lm, tcs, ids, [edits], freeze_attention=True)[0]
out = []
for step in sys.argv[1].split(","):
    if step == "edit": out.append(edit().tolist())
    else: attribute(lm, tcs, ids, max_feature_nodes=64)
print(json.dumps(out))
"""


def _run(order: str) -> list:
    p = subprocess.run([sys.executable, "-c", SCRIPT, order], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return [__import__("torch").tensor(x) for x in json.loads(p.stdout.strip().splitlines()[-1])]


def test_frozen_attention_edit_is_unchanged_by_attribution():
    import torch
    (fresh,) = _run("edit")
    before, after = _run("edit,attribute,edit")
    (attr_first,) = _run("attribute,edit")
    assert torch.equal(before, fresh)
    assert torch.equal(after, before), f"max |diff| {float((after - before).abs().max()):.3g} after an attribute call"
    assert torch.equal(attr_first, fresh), f"max |diff| {float((attr_first - fresh).abs().max()):.3g} with attribute first"
    # the edit is not a no-op, so the comparison means something
    assert float((fresh - edited_plain()).abs().max()) > 1e-3


def edited_plain():
    "The same edit with live attention, in this process: frozen attention must differ from it."
    import torch
    code = SCRIPT.replace("freeze_attention=True", "freeze_attention=False")
    p = subprocess.run([sys.executable, "-c", code, "edit"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return torch.tensor(json.loads(p.stdout.strip().splitlines()[-1])[0])
