"""Bad input and faults (issue 15): the `llm-biology` command as a careless user or script would run it.

Every case runs the command as a subprocess in its own folder (`work/`, the working directory, with
`work/data/` the data dir) and asserts: the exit status; ONE line on stderr that names the problem
(a key phrase); no `Traceback` anywhere in the output; nothing written, changed or deleted outside
the data dir (the whole test folder is snapshotted before and after, with decoy temp files of a
dead process beside the data dir for the stale-temp cleanup to leave alone).

Groups: CLI arguments, prompt files, model folders, transcoder folders, faults (signals, kill -9,
a dead kernel, two runs at once, stale temps, a corrupt run record). Most cases reuse one prepared
run of the demo model (`--stages prompts,baseline --n-prompts 2`), copied into each case's folder.
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
from typing import NamedTuple

import pytest

CLI = [sys.executable, "-c", "import sys; from llm_biology.cli import main; sys.exit(main())"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
N2 = ["--n-prompts", "2", "--no-render"]
LINUX = sys.platform.startswith("linux") and Path("/proc/self/stat").exists()
# Variants whose reader is also tested in its notebook run only in `make slow` (each costs a stage kernel).
SLOW = pytest.mark.skipif("slow" not in os.environ.get("LLMB_TEST_FLAGS", "").replace(",", " ").split(),
                          reason="a variant tested in its notebook too; runs with LLMB_TEST_FLAGS=slow (make slow)")


def params(cases: dict, slow: set) -> list:
    assert slow <= set(cases), slow - set(cases)
    return [pytest.param(k, id=k, marks=[SLOW] if k in slow else []) for k in cases]


# --- the sandbox of one case -------------------------------------------------------------------
class Box(NamedTuple):
    root: Path   # the test's folder: everything outside work/data must be left as it was
    work: Path   # the working directory of the command


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"]); p.wait()
    return p.pid


@pytest.fixture
def box(tmp_path) -> Box:
    work = tmp_path / "work"
    work.mkdir()
    dead = _dead_pid()
    # temp files named like llm_biology's, of a dead process, but outside the data dir: never touched
    for p in (tmp_path / f".notes.txt.{dead}.abc.tmp", work / f".notes.txt.{dead}.abc.tmp", tmp_path / "keep.txt"):
        p.write_text("not llm_biology's")
    return Box(tmp_path, work)


def snapshot(b: Box, data: str = "data") -> dict:
    "Every path under the box outside the data dir; a file with its size and modification time."
    data_dir = os.path.normpath(b.work / data)
    out = {}
    for dirpath, dirnames, filenames in os.walk(b.root):
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(dirpath, d)) != data_dir]
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, b.root)] = (st.st_size, st.st_mtime_ns) if n in filenames else "dir"
    return out


def _check_outside(b: Box, before: dict, data: str) -> None:
    after = snapshot(b, data)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"written outside the data dir: {sorted(changed)}"


def cli(b: Box, *args, data: str = "data", timeout: int = 300) -> subprocess.CompletedProcess:
    "Run `llm-biology *args` in `b.work`; check nothing outside `work/<data>` changed."
    before = snapshot(b, data)
    r = subprocess.run([*CLI, *map(str, args)], cwd=b.work, env=ENV, capture_output=True, text=True, timeout=timeout)
    _check_outside(b, before, data)
    return r


def assert_one_line(r, phrase: str, code: int = 2) -> str:
    "Exit status `code`, no traceback, and stderr is one `llm-biology: ...` line matching `phrase`."
    out = f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stdout + r.stderr, out
    assert r.returncode == code, f"exit status {r.returncode}, expected {code}\n{out}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"stderr is not one line\n{out}"
    prefix = "llm-biology: error: " if code == 2 else "llm-biology: "
    assert lines[0].startswith(prefix), out
    assert re.search(phrase, lines[0], re.I | re.S), f"{phrase!r} is not in the error: {lines[0]}"
    return lines[0]


def assert_ok(r) -> None:
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


# --- one prepared run, copied into the cases that need results ------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("prepared")
    r = subprocess.run([*CLI, "run", "--stages", "prompts,baseline", *N2], cwd=work, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert_ok(r)
    return work / "data"


def clone(prepared: Path, b: Box, slug: str = "demo") -> Path:
    "The prepared run's results under `work/data/<slug>/`; the model root."
    shutil.copytree(prepared / "demo", b.work / "data" / slug)
    return b.work / "data" / slug


def demo_asset(rel: str) -> Path:
    from llm_biology.core import package_asset
    return package_asset(f"demo/{rel}")


# === 1. CLI arguments: refused before any work ======================================================
ARGS = {  # id: (arguments after `run`, key phrase of the one-line error)
    "n-prompts 0": (["--n-prompts", "0"], r"n_prompts=0: must be an integer >= 1, e\.g\."),
    "n-prompts -1": (["--n-prompts", "-1"], r"n_prompts=-1: must be an integer >= 1"),
    "n-prompts two": (["--n-prompts", "two"], r"'two' is not valid for --n-prompts; e\.g\. --n-prompts 8"),
    "batch-size 0": (["--batch-size", "0"], r"batch_size=0: must be an integer >= 1, e\.g\. 8"),
    "batch-size 1.5": (["--batch-size", "1.5"], r"'1\.5' is not valid for --batch-size; e\.g\."),
    "layers 1,two": (["--layers", "1,two"], r"'two' is not a layer or a range.*e\.g\. '0-4,15-20'"),
    "layers 5-2": (["--layers", "5-2"], r"'5-2' is not a layer or a range"),
    "layers ,": (["--layers", ","], r"names no layer"),
    "layers 9 on a 4-layer model": (["--layers", "9"], r"Layers \[9\] do not exist: the model has layers 0\.\.3"),
    "device cuda:99": (["--device", "cuda:99"], r"device='cuda:99': (CUDA is not available|this machine has \d+ GPU)"),
    "device tpu": (["--device", "tpu"], r"device='tpu' is not a torch device"),
    "dtype float8": (["--dtype", "float8"], r"dtype='float8'.*float32, bfloat16, float16"),
    "unknown model": (["--model", "qwen9-1b"], r"Unknown model 'qwen9-1b'\. Known slugs: .*demo"),
    "model ..": (["--model", ".."], r"\.\. has no config\.json"),
    "model .../..": (["--model", ".../.."], r"Model folder \.\.\./\.\. does not exist"),
    "model org/..": (["--model", "org/.."], r"would not be a folder inside the data dir"),
    "model empty": (["--model", ""], r"--model is empty: give a registry slug"),
    "model ./missing": (["--model", "./missing"], r"Model folder \./missing does not exist"),
    "transcoders ./missing": (["--transcoders", "./missing-tcs"], r"Transcoder folder \./missing-tcs does not exist"),
    "backend spark": (["--backend", "spark"], r"backend='spark': use one of local, ray"),
    "stages nope": (["--stages", "prompts,nope"], r"Unknown stage\(s\) nope\. Stages: prompts"),
    "split dev": (["--split", "dev"], r"split='dev': use one of train, test"),
    "behaviours poetry": (["--behaviours", "poetry"], r"Unknown behaviour 'poetry'\. Use one of"),
    "token-positions last_0": (["--token-positions", "last_0"], r"token_positions must be 'all' or 'last_<k>'"),
    "node-threshold 2": (["--node-threshold", "2"], r"node_threshold=2\.0: must be a number between 0 and 1"),
    "max-feature-nodes 0": (["--max-feature-nodes", "0"], r"max_feature_nodes=0: must be an integer >= 1"),
    "n-test 0 for split test": (["--n-test", "0"], r"n_test=0: must be an integer >= 1"),
    "unknown option": (["--prompts", "2"], r"unrecognized arguments: --prompts 2"),
}


@pytest.mark.parametrize("case", ARGS, ids=str)
def test_cli_argument(box, case):
    args, phrase = ARGS[case]
    r = cli(box, "run", *args, "--no-render")
    assert_one_line(r, phrase)
    assert not (box.work / "data").exists(), "a refused run created the data dir"


def test_cli_no_command(box):
    assert_one_line(cli(box), r"the following arguments are required: command|choose from")


def test_data_dir_is_a_file(box):
    (box.work / "results.txt").write_text("mine")
    assert_one_line(cli(box, "run", "--data-dir", "results.txt", *N2, data="results.txt"),
                    r"--data-dir results\.txt is a file, not a folder; e\.g\. --data-dir data")


def test_data_dir_inside_a_file(box):
    (box.work / "results.txt").write_text("mine")
    assert_one_line(cli(box, "run", "--data-dir", "results.txt/data", *N2, data="results.txt/data"),
                    r"--data-dir results\.txt/data .*results\.txt is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: a read-only folder cannot be made")
def test_data_dir_not_writable(box):
    ro = box.work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line(cli(box, "run", "--data-dir", "ro/data", *N2, data="ro/data"), r"--data-dir ro/data is not writable")
    finally: ro.chmod(0o755)


@pytest.mark.skipif(not LINUX, reason="needs /proc, where nobody (not even root) can create a folder")
def test_data_dir_cannot_be_created(box):
    assert_one_line(cli(box, "run", "--data-dir", "/proc/llmb-data", *N2, data="/proc/llmb-data"),
                    r"--data-dir /proc/llmb-data (is not writable|cannot be created)")


# === 2. prompt files, edited by hand, read by the baseline stage =======================================
def _lines(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines()]


def _put(p: Path, recs) -> None:
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))


def _edit(**changes):
    "Change fields of line 2 (keeping its now stale prompt_id unless prompt_id=None)."
    def f(recs):
        r = recs[1]
        for k, v in changes.items():
            if v is None: r.pop(k, None)
            else: r[k] = v
        return recs
    return f


def _prefix(recs):   # ' 115' vs ' 11': the digits tokenize one by one, so one answer is a prefix of the other
    recs[1].update(incorrect_answer=recs[1]["correct_answer"][:-1]); recs[1].pop("prompt_id")
    return recs


def _foreign(recs):  # a factual_recall record pasted into the arithmetic file
    recs[1] = {"prompt": "The capital of France is", "correct_answer": " Paris", "incorrect_answer": " Rome",
               "behaviour": "factual_recall", "split": "test", "label": "fact"}
    return recs


def _raw(text_of):
    "An edit of the file's bytes (not of its records)."
    def f(p: Path): p.write_bytes(text_of(p.read_bytes()))
    f.on_file = True
    return f


def _delete(p: Path): p.unlink()
_delete.on_file = True


PROMPT_EDITS = {  # id: (edit of the records of arithmetic_test.jsonl, or of its bytes (_raw), key phrase)
    "identical answers": (lambda rs: _edit(incorrect_answer=rs[1]["correct_answer"])(rs),
                          r"line 2, field 'incorrect_answer': equals the correct answer"),
    "prefix answers": (_prefix, r"line 2, field 'incorrect_answer': .*one is a prefix of the other"),
    "edited answer, stale prompt_id": (_edit(incorrect_answer=" 999"), r"line 2, field 'prompt_id': .*was edited"),
    "missing field": (_edit(label=None), r"line 2, field 'label': missing"),
    "answer not a string": (_edit(correct_answer=115, prompt_id=None), r"line 2, field 'correct_answer': expected a string"),
    "empty answer": (_edit(correct_answer=" ", prompt_id=None), r"line 2, field 'correct_answer': empty"),
    "unknown behaviour": (_edit(behaviour="poetry"), r"line 2, field 'behaviour': unknown behaviour 'poetry'"),
    "record of another behaviour": (_foreign, r"line 2, field 'behaviour': .*factual_recall.*arithmetic"),
    "record of another split": (_edit(split="train", prompt_id=None), r"line 2, field 'split': .*train.*test"),
    "label not a class": (_edit(label="product"), r"line 2, field 'label': 'product' is not a class of arithmetic"),
    "duplicate line": (lambda rs: rs[:2] + [rs[0]] + rs[2:], r"line 3: the same prompt and answers as line 1"),
    "not an object": (lambda rs: rs[:1] + ["[1, 2]"] + rs[2:], r"line 2: expected a JSON object, got list"),
    "bad JSON": (_raw(lambda b: b.replace(b"\n", b"\n{\"prompt\": \"Calc\n", 1)), r"line 2: not valid JSON"),
    "NaN in JSON": (_raw(lambda b: b.replace(b'"offset": 10', b'"offset": NaN', 1)), r"line 1: not valid JSON"),
    "not UTF-8": (_raw(lambda b: b.replace(b"Calculate", b"Calc\xffulate", 1)), r"arithmetic_test\.jsonl is not UTF-8"),
    "empty file": (_raw(lambda b: b""), r"arithmetic_test\.jsonl holds no prompts"),
    "file deleted": (_delete, r"Missing prompt file\(s\) .*arithmetic_test\.jsonl"),
}


@pytest.mark.parametrize("case", params(PROMPT_EDITS, {"answer not a string", "empty answer", "unknown behaviour",
    "record of another split", "label not a class", "not an object", "NaN in JSON", "not UTF-8", "empty file",
    "edited answer, stale prompt_id"}))
def test_prompt_file(prepared, box, case):
    edit, phrase = PROMPT_EDITS[case]
    p = clone(prepared, box) / "prompts" / "arithmetic_test.jsonl"
    if getattr(edit, "on_file", False): edit(p)
    else: _put(p, edit(_lines(p)))
    r = cli(box, "run", "--stages", "baseline", *N2)
    line = assert_one_line(r, phrase)
    assert "arithmetic_test.jsonl" in line, line


def test_prompt_answers_that_tokenize_identically(prepared, box):
    "A tokenizer that lowercases (normalizer) maps ' Paris' and ' PARIS' to the same ids: refused at read, not scored 0."
    model = box.work / "lower"
    shutil.copytree(demo_asset("model"), model)
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["normalizer"] = {"type": "Lowercase"}
    (model / "tokenizer.json").write_text(json.dumps(tok))
    p = clone(prepared, box, "lower") / "prompts" / "factual_recall_test.jsonl"
    recs = _lines(p)
    recs[0].update(incorrect_answer=recs[0]["correct_answer"].upper()); recs[0].pop("prompt_id")
    _put(p, recs)
    r = cli(box, "run", "--model", "lower", "--behaviours", "factual_recall", "--stages", "baseline", *N2)
    assert_one_line(r, r"factual_recall_test\.jsonl, line 1, field 'incorrect_answer': .*tokenize identically")


def test_hand_edited_prompts_rerun_the_baseline(prepared, box):
    "A valid hand edit of a prompt file is what the baseline reads next: it re-runs, it is not 'up to date'."
    root = clone(prepared, box)
    p = root / "prompts" / "arithmetic_test.jsonl"
    recs = _lines(p)
    recs[0], recs[1] = recs[1], recs[0]
    _put(p, recs)
    r = cli(box, "run", "--stages", "baseline", *N2)
    assert_ok(r)
    assert "up to date" not in r.stdout, r.stdout
    from llm_biology.baseline import read_baseline_table
    assert list(read_baseline_table(root / "results" / "baseline_arithmetic_test.csv")["prompt_id"]) == \
        [recs[0]["prompt_id"], recs[1]["prompt_id"]]


# === 3. model folders ===================================================================================
def _tensors(p: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(p)


def _save(sd: dict, p: Path) -> None:
    from safetensors.torch import save_file
    save_file(sd, p, metadata={"format": "pt"})


def _nan_weight(m: Path):
    sd = _tensors(m / "model.safetensors")
    sd["model.layers.1.mlp.up_proj.weight"][2, 3] = float("nan")
    _save(sd, m / "model.safetensors")


def _drop_tensor(m: Path):
    sd = _tensors(m / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    _save(sd, m / "model.safetensors")


def _extra_layer(m: Path):   # weights of 5 layers, config of 4: the fifth would be dropped in silence
    sd = _tensors(m / "model.safetensors")
    sd.update({k.replace("layers.3.", "layers.4."): v.clone() for k, v in sd.items() if ".layers.3." in k})
    _save(sd, m / "model.safetensors")


def _pickle_only(m: Path):
    import torch
    torch.save(_tensors(m / "model.safetensors"), m / "pytorch_model.bin")
    (m / "model.safetensors").unlink()


def _config(**kw):
    def f(m: Path):
        c = json.loads((m / "config.json").read_text()); c.update(kw)
        (m / "config.json").write_text(json.dumps(c))
    return f


def _truncate(name: str, keep: float = 0.5):
    def f(folder: Path):
        b = (folder / name).read_bytes()
        (folder / name).write_bytes(b[:int(len(b) * keep)])
    return f


MODEL_EDITS = {  # id: (edit of a copy of the demo model folder `m`, key phrase)
    "no config.json": (lambda m: (m / "config.json").unlink(), r"m has no config\.json"),
    "config.json not JSON": (lambda m: (m / "config.json").write_text("{\"model_type\": "), r"config.*not a valid JSON"),
    "unknown model type": (_config(model_type="nosuchmodel"), r"model type `nosuchmodel`"),
    "truncated safetensors": (_truncate("model.safetensors"), r"m \(model\.safetensors\).*(incomplete|truncated)"),
    "garbage safetensors": (lambda m: (m / "model.safetensors").write_bytes(b"\xff" * 4096),
                            r"m \(model\.safetensors\).*deserializing header"),
    "NaN weight": (_nan_weight, r"tensor model\.layers\.1\.mlp\.up_proj\.weight holds 1 non-finite value"),
    "missing tensor": (_drop_tensor, r"model\.safetensors\) does not fit its config\.json: the weights miss 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"),
    "tensors the config does not use": (_extra_layer, r"model\.safetensors\) does not fit its config\.json: .*no place for .*model\.layers\.4\."),
    "pickled .bin only": (_pickle_only, r"holds only pickled weights \(pytorch_model\.bin\), which are never loaded"),
    "no tokenizer": (lambda m: [(m / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")],
                     r"tokenizer"),
}


@pytest.mark.parametrize("case", params(MODEL_EDITS, {"config.json not JSON", "unknown model type", "no tokenizer",
                                                   "garbage safetensors"}))
def test_model_folder(prepared, box, case):
    edit, phrase = MODEL_EDITS[case]
    m = box.work / "m"
    shutil.copytree(demo_asset("model"), m)
    edit(m)
    clone(prepared, box, "m")
    r = cli(box, "run", "--model", "m", "--behaviours", "arithmetic", "--stages", "baseline", *N2)
    assert_one_line(r, phrase)


def test_every_model_load_is_safetensors_only():
    "Every `from_pretrained` of a model in the package passes use_safetensors=True and no trust_remote_code=True."
    import ast
    import llm_biology
    calls = []
    for p in sorted(Path(llm_biology.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                kw = {k.arg: k.value for k in node.keywords}
                assert not (isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value), \
                    f"{p.name}:{node.lineno} trusts remote code"
                if ast.unparse(node.func.value).endswith("Tokenizer"): continue   # tokenizers hold no pickles
                calls.append(f"{p.name}:{node.lineno}")
                assert isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True, \
                    f"{p.name}:{node.lineno} loads a model without use_safetensors=True"
    assert len(calls) >= 3, calls   # models.load_model and the demo's two


# === 4. transcoder folders, read by the features stage ===================================================
def _tc_edit(layer: int, fn):
    def f(tc: Path):
        sd = _tensors(tc / f"layer_{layer}.safetensors")
        fn(sd)
        _save(sd, tc / f"layer_{layer}.safetensors")
    return f


def _other_width(tc: Path):   # a set made for a model of width 64
    import torch
    for l in range(4):
        _save({"W_enc": torch.zeros(1024, 64), "W_dec": torch.zeros(1024, 64), "b_enc": torch.zeros(1024),
               "b_dec": torch.zeros(64)}, tc / f"layer_{l}.safetensors")


def _set(sd, name, idx, v):
    sd[name][idx] = v


TC_EDITS = {  # id: (edit of a copy of the demo transcoders `tc`, key phrase); layer 1 is analysed
    "no config.yaml": (lambda tc: (tc / "config.yaml").unlink(), r"No config\.yaml in transcoder folder tc"),
    "config.yaml not YAML": (lambda tc: (tc / "config.yaml").write_text("model_kind: [transcoder_set\n"),
                             r"tc/config\.yaml is not valid YAML \(.*line \d+.*\)\. Fix"),
    "not a transcoder set": (lambda tc: (tc / "config.yaml").write_text(
        "model_kind: sae\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"), r"model_kind 'sae'"),
    "layer file missing": (lambda tc: (tc / "layer_1.safetensors").unlink(), r"missing the files of layers \[1\]"),
    "last layer missing": (lambda tc: (tc / "layer_3.safetensors").unlink(), r"it has 3 layers, the model has 4"),
    "NaN weight": (_tc_edit(1, lambda sd: _set(sd, "W_dec", (3, 4), float("nan"))),
                   r"layer_1\.safetensors .*tensor W_dec holds 1 non-finite value"),
    "inf threshold": (_tc_edit(1, lambda sd: _set(sd, "activation_function.threshold", 5, float("inf"))),
                      r"layer_1\.safetensors .*tensor activation_function\.threshold holds 1 non-finite"),
    "truncated layer": (_truncate("layer_1.safetensors"), r"layer_1\.safetensors .*truncated or corrupt"),
    "wrong shape": (_tc_edit(1, lambda sd: sd.update(b_enc=sd["b_enc"][:1000])), r"layer_1\.safetensors .*wrong shape"),
    "missing tensor": (_tc_edit(1, lambda sd: sd.pop("b_dec")), r"layer_1\.safetensors .*missing tensors \['b_dec'\]"),
    "made for another width": (_other_width, r"does not fit model demo: its d_model is 64"),
}


@pytest.mark.parametrize("case", params(TC_EDITS, {"config.yaml not YAML", "not a transcoder set", "last layer missing",
                                                   "inf threshold", "missing tensor", "made for another width"}))
def test_transcoder_folder(prepared, box, case):
    edit, phrase = TC_EDITS[case]
    tc = box.work / "tc"
    shutil.copytree(demo_asset("transcoders"), tc)
    edit(tc)
    clone(prepared, box)
    r = cli(box, "run", "--transcoders", "tc", "--layers", "1", "--behaviours", "arithmetic", "--stages", "features", *N2)
    assert_one_line(r, phrase)


# === 5. faults ==========================================================================================
NEEDS_PROC = pytest.mark.skipif(not LINUX, reason="finds the stage kernel through /proc")


def _start(b: Box, *args) -> subprocess.Popen:
    "Start `llm-biology *args` in its own session (as a shell job would be), with Ctrl-C deliverable."
    return subprocess.Popen([*CLI, *map(str, args)], cwd=b.work, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(cond, timeout: float = 120, what: str = "") -> None:
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    out = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try: fields = st.read_text().rsplit(")", 1)[1].split()
        except OSError: continue
        if int(fields[1]) == pid: out.append(int(st.parent.name))
    return out


def _kernel_of(pid: int) -> int | None:
    for c in _children(pid):
        try: cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError: continue
        if b"ipykernel" in cmd: return c
    return None


def _stage_running(root: Path, p: subprocess.Popen, template: str = "02_baseline") -> bool:
    "The stage's notebook is being written and its kernel runs."
    assert p.poll() is None, f"the run ended early: {p.communicate()}"
    return (root / "notebooks" / f".{template}.{p.pid}.x.tmp.ipynb").exists() and _kernel_of(p.pid) is not None


def _finish(p: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _temps(root: Path) -> list[Path]:
    from llm_biology.core import temp_owner
    return [p for p in root.rglob(".*") if p.is_file() and temp_owner(p) is not None]


def check_strict(root: Path) -> int:
    "Read every file of a prompts+baseline run with its strict reader; return how many."
    import nbformat
    from llm_biology.baseline import read_baseline_metrics, read_baseline_table
    from llm_biology.core import paths_at, read_json, read_run_record, read_stage_record, temp_owner
    from llm_biology.models import load_tokenizer
    from llm_biology.prompts import read_jsonl
    paths, tok, n = paths_at(root), load_tokenizer("demo"), 0
    for p in sorted(q for q in root.rglob("*") if q.is_file() and temp_owner(q) is None):
        rel = p.relative_to(root).as_posix()
        if rel == "run.json": read_run_record(p)
        elif rel in (".lock",): pass                                   # the lock file itself (empty)
        elif rel == ".lock.json": read_json(p)
        elif rel.startswith("stages/"): assert read_stage_record(paths, p.stem)["stage"] == p.stem
        elif rel.startswith("prompts/") and p.suffix == ".jsonl": read_jsonl(p, tok)
        elif rel.startswith("results/baseline_metrics_"): read_baseline_metrics(p)
        elif rel.startswith("results/baseline_") and p.suffix == ".csv": read_baseline_table(p)
        elif rel.startswith("results/figures/") and p.suffix == ".png":
            b = p.read_bytes(); assert b.startswith(b"\x89PNG") and b.endswith(b"IEND\xaeB`\x82"), rel
        elif rel.startswith("notebooks/") and p.suffix == ".ipynb": nbformat.validate(nbformat.read(p, as_version=4))
        else: raise AssertionError(f"{rel}: no strict reader for this file")
        n += 1
    return n


@NEEDS_PROC
def test_kill_9_mid_stage_then_rerun(box):
    "SIGKILL (the runner and its stage kernel) mid-stage: every file left is complete, a rerun resumes and completes."
    root = box.work / "data" / "demo"
    before = snapshot(box)
    p = _start(box, "run", "--stages", "prompts,baseline", *N2)
    _wait_for(lambda: _stage_running(root, p), what="the baseline stage")
    kernel = _kernel_of(p.pid)
    time.sleep(1.5)   # inside the stage: the model is loading or scoring
    os.kill(kernel, signal.SIGKILL); os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    _check_outside(box, before, "data")
    assert check_strict(root) > 10
    r = cli(box, "run", "--stages", "prompts,baseline", *N2)
    assert_ok(r)
    assert "prompts: up to date" in r.stdout and "baseline: Step 2" in r.stdout, r.stdout
    assert not _temps(root), _temps(root)
    check_strict(root)
    from llm_biology.core import read_run_record
    assert set(read_run_record(root / "run.json")["stages"]) == {"prompts", "baseline"}


@NEEDS_PROC
def test_two_runs_on_one_data_dir(prepared, box):
    "A second run on a data dir in use fails at once, naming the holder's pid and start time; the first is unharmed."
    root = clone(prepared, box)
    before = snapshot(box)
    first = _start(box, "run", "--stages", "baseline", "--force", *N2)
    _wait_for(lambda: _stage_running(root, first), what="the first run's baseline stage")
    second = cli(box, "run", "--stages", "prompts,baseline", "--n-prompts", "3", "--no-render")
    assert_one_line(second, rf"Another run is writing to data/demo \(pid {first.pid}, .*started \d{{4}}-\d\d-\d\dT.*"
                            rf"kill {first.pid}")
    assert_ok(_finish(first))
    _check_outside(box, before, "data")
    from llm_biology.baseline import read_baseline_table
    from llm_biology.core import read_run_record
    assert read_run_record(root / "run.json")["config"]["n_prompts"] == 2
    assert len(read_baseline_table(root / "results" / "baseline_arithmetic_test.csv")) == 2


@NEEDS_PROC
@pytest.mark.parametrize("sig,code,phrase", [(signal.SIGTERM, 143, r"terminated; run again to resume"),
                                              (signal.SIGINT, 130, r"interrupted; run again to resume")],
                         ids=["SIGTERM", "SIGINT (Ctrl-C)"])
def test_signal_mid_stage(prepared, box, sig, code, phrase):
    "SIGTERM / Ctrl-C mid-stage: one line, exit 143 / 130, no temp file or kernel left, the lock released."
    root = clone(prepared, box)
    before = snapshot(box)
    p = _start(box, "run", "--stages", "baseline", "--force", *N2)
    _wait_for(lambda: _stage_running(root, p), what="the baseline stage")
    kernel = _kernel_of(p.pid)
    time.sleep(1.0)
    os.kill(p.pid, sig)
    assert_one_line(_finish(p, 60), phrase, code)
    _check_outside(box, before, "data")
    _wait_for(lambda: not Path(f"/proc/{kernel}").exists() or b"zombie" in Path(f"/proc/{kernel}/status").read_bytes()
              or b"(Z" in Path(f"/proc/{kernel}/stat").read_bytes(), timeout=30, what="the stage kernel to stop")
    assert not _temps(root), _temps(root)
    assert_ok(cli(box, "run", "--stages", "prompts", *N2))   # the lock is free


@NEEDS_PROC
def test_dead_kernel(prepared, box):
    "A stage kernel killed (as by the OOM killer): one line that says so and what to lower; the partial notebook kept."
    root = clone(prepared, box)
    p = _start(box, "run", "--stages", "baseline", "--force", *N2)
    _wait_for(lambda: _stage_running(root, p), what="the baseline stage")
    time.sleep(1.0)
    os.kill(_kernel_of(p.pid), signal.SIGKILL)
    line = assert_one_line(_finish(p, 120), r"stage baseline: the stage's kernel died \(out of memory\?\); lower "
                                            r"--batch-size or --max-feature-nodes")
    assert (root / "notebooks" / "02_baseline.failed.ipynb").is_file(), line
    assert not _temps(root), _temps(root)


def test_stale_temps_removed_only_in_the_data_dir(prepared, box):
    "A killed run's temp files under the data dir go; a live process's stay; those outside (the box's decoys) stay."
    root = clone(prepared, box)
    dead, live = root / "results" / f".baseline_metrics_test.json.{_dead_pid()}.x1.tmp", \
        root / "results" / f".baseline_metrics_test.json.{os.getpid()}.x2.tmp"
    for t in (dead, live): t.write_text("{")
    assert_ok(cli(box, "run", "--stages", "prompts", *N2))
    assert not dead.exists() and live.exists()


def test_corrupt_run_record(prepared, box):
    "A run.json cut short (by hand, or by a tool that writes in place): one line saying to delete it."
    root = clone(prepared, box)
    (root / "run.json").write_text((root / "run.json").read_text()[:200])
    assert_one_line(cli(box, "run", "--stages", "prompts", *N2), r"run\.json is not valid JSON .*delete it")
