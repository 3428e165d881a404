"""lm-evaluation-harness through mmx: local JSONL tasks (one multiple-choice, one generation) scored by lm-eval with a
backend whose answers we set, checked against scores worked out by hand; runs stored, resumed, and driven over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from mmx.model.backends.base import register_backend  # noqa: E402
from mmx.model.tokenizer import ByteTokenizer  # noqa: E402
from mmx.workflows.lm_eval.adapter import MmxLM, ResponseLog, rolling_windows  # noqa: E402

MC_DOCS = [  # (question, choices, gold index); the scripted model prefers the starred choice
    ("2+2", ["3", "4*", "5"], 1),  # right
    ("sky color", ["blue", "green*"], 0),  # wrong
    ("capital of France", ["Rome", "Paris*", "Berlin"], 1),  # right
    ("largest planet", ["Jupiter*", "Mars"], 0),  # right
]
GEN_DOCS = [  # (question, gold, the scripted reply before lm-eval's "\n" stop)
    ("2+2", "4", "4\nQ: 3+3"),  # right once cut at the newline
    ("color of grass", "green", "Green"),  # right: the metric ignores case
    ("opposite of up", "down", "left"),  # wrong
]
EXPECTED_ACC = 3 / 4
EXPECTED_ACC_STDERR = 0.25  # sample std of [1, 0, 1, 1] (0.5) over sqrt(4)
EXPECTED_EXACT_MATCH = 2 / 3

MC_YAML = """task: mmx_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
GEN_YAML = """task: mmx_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
"""


class Scripted:
    """A backend whose answers are tables: each continuation's log-likelihood, each question's reply."""

    def __init__(self) -> None:
        self.tokenizer = ByteTokenizer()
        self.max_context = 4096
        self.scores = {c.rstrip("*"): (-1.0 if c.endswith("*") else -4.0) for _, cs, _ in MC_DOCS for c in cs}
        self.replies = {q: reply for q, _, reply in GEN_DOCS}
        self.calls: list[tuple[str, int]] = []

    def loglikelihood(self, pairs):
        self.calls.append(("loglikelihood", len(pairs)))
        return [(self.scores[cont.strip()], self.scores[cont.strip()] == -1.0) for _, cont in pairs]

    def generate(self, prompts, max_new_tokens, stop=None):
        self.calls.append(("generate", max_new_tokens))
        replies = [next(r for q, r in self.replies.items() if f"Q: {q}\n" in p) for p in prompts]
        return [r.split(stop[0])[0] if stop else r for r in replies]

    def describe(self):
        return {"spec": "scripted:", "name": "scripted", "random_weights": False}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """An include directory with the two tasks and their JSONL data."""
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    mc = [{"question": q, "choices": [c.rstrip("*") for c in cs], "answer": a} for q, cs, a in MC_DOCS]
    gen = [{"question": q, "answer": gold} for q, gold, _ in GEN_DOCS]
    for name, rows, yaml in (("mc", mc, MC_YAML), ("gen", gen, GEN_YAML)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / f"{name}.yaml").write_text(yaml.format(data=data))
    return folder


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path, monkeypatch):
    """lm-eval loads the JSONL through `datasets`: offline, with its cache in the test's temp dir."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture
def scripted() -> Scripted:
    backend = Scripted()
    register_backend("scripted", lambda rest, **options: backend)
    return backend


def lm_eval_args(task_dir: Path, out: Path, model: str, *extra: str) -> list[str]:
    tasks = ["--tasks", "mmx_mc,mmx_gen", "--include-path", str(task_dir)]
    return ["eval", "lm-eval", "--model", model, *tasks, "--out", str(out), "--quiet", "--json", *extra]


def test_lm_eval_scores_match_hand_computed_values(task_dir, tmp_path, cli, scripted):
    out = tmp_path / "run"
    code, stdout, err = cli(lm_eval_args(task_dir, out, "scripted:"))
    assert code == 0, err
    results = json.loads((out / "lm_eval_results.json").read_text())
    assert results["mmx_mc"]["acc,none"] == pytest.approx(EXPECTED_ACC)
    assert results["mmx_mc"]["acc_stderr,none"] == pytest.approx(EXPECTED_ACC_STDERR)
    assert results["mmx_gen"]["exact_match,none"] == pytest.approx(EXPECTED_EXACT_MATCH)
    assert json.loads(stdout)["results"] == results
    assert ("generate", 8) in scripted.calls  # the task's max_gen_toks reached the backend

    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "lm-eval" and run["params"]["tasks"] == ["mmx_mc", "mmx_gen"]
    assert run["model"]["name"] == "scripted" and run["params"]["include_sha256"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by_task = {
        t: sorted((s for s in samples if s["task"] == t), key=lambda s: s["index"]) for t in ("mmx_mc", "mmx_gen")
    }
    assert [s["score"] for s in by_task["mmx_mc"]] == [1.0, 0.0, 1.0, 1.0]
    assert [s["prediction"] for s in by_task["mmx_mc"]] == [" 4", " green", " Paris", " Jupiter"]
    assert by_task["mmx_mc"][1]["references"] == [" blue"]
    assert [(s["prediction"], s["score"]) for s in by_task["mmx_gen"]] == [("4", 1.0), ("Green", 1.0), ("left", 0.0)]
    assert "configs" in json.loads((out / "lm_eval_output.json").read_text())

    scripted.calls.clear()
    code, stdout, err = cli(lm_eval_args(task_dir, out, "scripted:"))
    assert code == 0, err
    assert scripted.calls == []  # every answer came from the run's response log
    assert json.loads(stdout)["resumed"] is True
    assert json.loads((out / "lm_eval_results.json").read_text()) == results
    assert len((out / "samples.jsonl").read_text().splitlines()) == len(samples)


def test_resume_refuses_changed_parameters(task_dir, tmp_path, cli, scripted):
    out = tmp_path / "run"
    assert cli(lm_eval_args(task_dir, out, "scripted:", "--limit", "2"))[0] == 0
    code, _, err = cli(lm_eval_args(task_dir, out, "scripted:", "--limit", "3"))
    assert code == 2 and "different parameters (limit)" in err


def test_slow_server_times_out_then_the_run_resumes(task_dir, tmp_path, cli, hf_backend, live_server, faulty):
    """Over HTTP: log-likelihoods finish, the generation requests time out (the run stops with a clear message and
    keeps the answers it had), then the rerun asks the server only for what is missing and scores like in-process."""
    direct = tmp_path / "direct"
    assert cli(lm_eval_args(task_dir, direct, "hf:" + str(hf_backend.path), "--device", "cpu"))[0] == 0
    slow = faulty(hf_backend, "slow", after=len(sum((cs for _, cs, _ in MC_DOCS), [])), delay=1.5)
    with live_server(slow) as server:
        out = tmp_path / "served"
        flags = ("--timeout", "0.5", "--retries", "0")
        code, _, err = cli(lm_eval_args(task_dir, out, f"openai:{server.url}", *flags))
        assert code == 2 and "did not answer within 0.5 s" in err, err
        logged = ResponseLog(out / "lm_eval_requests.jsonl").answers
        assert len(logged) == 10  # every log-likelihood request of the multiple-choice task
        slow.fault = None
        scored = slow.scored
        patient = ("--timeout", "60", "--retries", "0")  # the server may still be busy with the timed-out requests
        code, _, err = cli(lm_eval_args(task_dir, out, f"openai:{server.url}", *patient))
        assert code == 0, err
        assert slow.scored == scored  # the log-likelihoods came from the run's log, not the server
        assert len(ResponseLog(out / "lm_eval_requests.jsonl").answers) == 10 + len(GEN_DOCS)
    served = json.loads((out / "lm_eval_results.json").read_text())
    expected = json.loads((direct / "lm_eval_results.json").read_text())
    assert served["mmx_mc"]["acc,none"] == expected["mmx_mc"]["acc,none"]
    assert served["mmx_gen"]["exact_match,none"] == expected["mmx_gen"]["exact_match,none"]


def test_unknown_tasks_are_one_clear_error(task_dir, tmp_path, cli, scripted):
    code, _, err = cli(
        ["eval", "lm-eval", "--model", "scripted:", "--tasks", "mmx_mcq", "--include-path", str(task_dir)]
    )
    assert code == 2 and "lm-eval has no task 'mmx_mcq'" in err and "mmx_mc" in err


def test_rolling_windows_predict_every_token_once_within_the_context():
    ids = list(range(100, 123))
    windows = rolling_windows(ids, 8)
    assert [t for _, pred in windows for t in pred] == ids
    assert windows[0][0] == []
    for context, pred in windows[1:]:
        assert len(context) + len(pred) == 9  # 8 model inputs: the last token is only predicted
        assert context + pred == ids[ids.index(pred[-1]) - 8 : ids.index(pred[-1]) + 1]
    assert rolling_windows(ids, None) == [([], ids)]


def test_rolling_loglikelihood_of_a_short_text_is_its_whole_log_likelihood(hf_backend):
    class Request:
        def __init__(self, *args):
            self.args = args

    text = "The grass is green. The sky is blue."
    (rolling,) = MmxLM(backend=hf_backend).loglikelihood_rolling([Request(text)])
    ((whole, _),) = hf_backend.loglikelihood([("", text)])
    assert rolling == pytest.approx(whole, abs=1e-4)


# --- lm-eval's own options, its CLI, and chat ------------------------------------------------------------------------

METADATA_YAML = """task: mmx_lengths
dataset_path: ""
dataset_name: ""
custom_dataset: !function lengths.docs
output_type: generate_until
test_split: test
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
METADATA_CODE = '''import datasets


def docs(**metadata):
    """One document per length, naming the tokenizer: as lm-eval's RULER tasks read their metadata."""
    lengths = metadata.get("max_seq_lengths", [4096])
    rows = [{"question": f"length {n} with {metadata.get('tokenizer')}", "answer": str(n)} for n in lengths]
    return {"test": datasets.Dataset.from_list(rows)}
'''


@pytest.fixture(scope="module")
def metadata_task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-metadata")
    (folder / "lengths.yaml").write_text(METADATA_YAML)
    (folder / "lengths.py").write_text(METADATA_CODE)
    return folder


def logged_samples(output_path: Path, task: str) -> list[dict]:
    (found,) = output_path.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in found.read_text().splitlines()]


def test_metadata_reaches_the_tasks_with_the_models_tokenizer(
    metadata_task_dir, hf_dir, tmp_path, cli, capfd, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # not a git checkout: lm-eval's `git describe` would complain on stderr
    argv = ["eval", "lm-eval", "--model", f"hf:{hf_dir}", "--device", "cpu", "--tasks", "mmx_lengths"]
    argv += ["--include_path", str(metadata_task_dir), "--metadata", '{"max_seq_lengths": [1024, 2048]}']
    argv += ["--gen_kwargs", "max_gen_toks=3", "--output_path", str(tmp_path / "lm"), "--log_samples"]
    code, _, err = cli([*argv, "--out", str(tmp_path / "run"), "--quiet", "--json"])
    assert code == 0, err
    docs = logged_samples(tmp_path / "lm", "mmx_lengths")
    assert [d["doc"]["question"] for d in docs] == [f"length {n} with {hf_dir}" for n in (1024, 2048)]
    assert all(d["arguments"]["gen_args_0"]["arg_1"]["max_gen_toks"] == 3 for d in docs)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["params"]
    assert run["metadata"] == {"max_seq_lengths": [1024, 2048], "tokenizer": str(hf_dir)}
    assert run["gen_kwargs"] == {"max_gen_toks": 3}
    quiet = capfd.readouterr().err
    assert "fatal:" not in quiet and "it/s]" not in quiet  # no git probe, no tqdm bars


def test_chat_templates_lay_out_lm_evals_prompts(task_dir, hf_chat_dir, tmp_path, cli):
    argv = ["eval", "lm-eval", "--model", f"hf:{hf_chat_dir}", "--device", "cpu", "--tasks", "mmx_gen"]
    argv += ["--include-path", str(task_dir), "--apply_chat_template", "--limit", "2"]
    argv += ["--output-path", str(tmp_path / "lm"), "--log-samples", "--out", str(tmp_path / "run"), "--quiet"]
    code, _, err = cli(argv)
    assert code == 0, err
    contexts = [d["arguments"]["gen_args_0"]["arg_0"] for d in logged_samples(tmp_path / "lm", "mmx_gen")]
    assert contexts[0] == "<|turn|>user\nQ: 2+2\nA:<|end|>\n<|turn|>assistant\n"  # the backend adds the BOS
    assert json.loads((tmp_path / "run" / "run.json").read_text())["params"]["apply_chat_template"] is True


@pytest.mark.slow  # lm-eval's CLI indexes all of its ~15k task files
def test_lm_evals_own_cli_runs_mmx_models(task_dir, hf_dir, tmp_path, monkeypatch):
    """`mmx-lm-eval`, the drop-in for `lm_eval`: the same arguments, `--model mmx` registered, lm-eval's own models
    still there."""
    from lm_eval.api.registry import get_model

    from mmx.workflows.lm_eval.cli import main

    monkeypatch.setattr("sys.argv", ["mmx-lm-eval"])
    model_args = f"model=hf:{hf_dir},device=cpu"
    argv = ["--model", "mmx", "--model_args", model_args, "--tasks", "mmx_mc,mmx_gen", "--include_path", str(task_dir)]
    main([*argv, "--output_path", str(tmp_path / "out")])
    (results,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results.read_text())["results"]
    assert set(scores) == {"mmx_mc", "mmx_gen"} and 0 <= scores["mmx_mc"]["acc,none"] <= 1
    assert get_model("mmx") is MmxLM and get_model("local-completions").__name__ == "LocalCompletionsAPI"
