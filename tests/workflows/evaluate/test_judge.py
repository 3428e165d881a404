"""The NIAH judge: a model behind an OpenAI-compatible server rates each answer 1-10 beside the containment score.

The judge here is a scripted server that answers every completion with one fixed reply and keeps the prompts it was
sent, so the test sees exactly what the judge is asked and what the run records.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mmx.workflows.evaluate.judge import parse_rating


@pytest.mark.parametrize(
    ("reply", "rating"),
    [("7]]", 7), (" 10]] because it matches", 10), ("[[3]]", 3), ("0", None), ("no idea", None), ("11", None)],
)
def test_the_rating_is_the_first_whole_number_from_1_to_10(reply: str, rating: int | None) -> None:
    assert parse_rating(reply) == rating


class _ScriptedJudge(BaseHTTPRequestHandler):
    reply = "8]]"
    prompts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send({"object": "list", "data": [{"id": "scripted-judge", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.endswith("/completions"):  # a plain completions server: no /tokenize, no chat
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        type(self).prompts.extend(prompts)
        choices = [{"index": i, "text": self.reply, "finish_reason": "stop"} for i in range(len(prompts))]
        self._send({"object": "text_completion", "model": body.get("model"), "choices": choices})

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    _ScriptedJudge.prompts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_niah_run_records_the_judges_rating_beside_containment(mmx, tmp_path, read_records, judge_url) -> None:
    run = tmp_path / "judged"
    args = ("eval", "niah", "--model", "random:tiny", "--lengths", "1k", "--depths", "2", "--out", run)
    code, _, err = mmx(*args, "--judge", f"openai:{judge_url}", "--judge-model", "scripted-judge")
    assert code == 0, err
    records = read_records(run)
    assert len(records) == 2
    for record in records:
        assert record["judge_score"] == 8 and 0.0 <= record["score"] <= 1.0  # both scores, containment unchanged
    # Each prompt shows the question, the needle sentence as the reference (as Kamradt's harness) and the answer.
    asked = {(r["metadata"]["question"], r["metadata"]["needle"], r["prediction"].strip()) for r in records}
    shown = {(q, ref, answer) for q, ref, answer in asked for p in _ScriptedJudge.prompts
             if f"QUESTION: {q}\nREFERENCE: {ref}\nRESPONSE: {answer}\n" in p}  # fmt: skip
    assert len(_ScriptedJudge.prompts) == 2 and shown == asked
    meta = json.loads((run / "run.json").read_text())
    assert meta["params"]["judge"]["spec"] == f"openai:{judge_url}" and meta["params"]["judge"]["scale"] == "1-10"


def test_an_unreachable_judge_is_one_line_before_the_run_starts(mmx, tmp_path) -> None:
    args = ("eval", "niah", "--model", "random:tiny", "--lengths", "1k", "--depths", "2", "--out", tmp_path / "r")
    code, _, err = mmx(*args, "--judge", "openai:http://127.0.0.1:9/v1")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
