"""`mmx eval ruler` on a Hugging Face model, in-process (`hf:DIR`) and through `mmx serve` (`openai:URL`): the same
prompts give the same predictions, and a sweep whose server dies or errors keeps what finished and resumes cleanly."""

from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RULER = ["--tasks", "niah_single_1,niah_multikey_2", "--lengths", "1k", "--samples", "2", "--quiet", "--json"]
TOTAL = 4  # 2 tasks × 1 length × 2 samples


def records(run: Path) -> dict[tuple, dict]:
    """samples.jsonl by (task, length, index), refusing duplicates (a clean resume never writes one twice)."""
    lines = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    keyed = {(r["task"], r["length"], r["index"]): r for r in lines}
    assert len(keyed) == len(lines), "a sample was recorded twice"
    return keyed


def same_answers(a: dict[tuple, dict], b: dict[tuple, dict]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for field in ("prompt_hash", "prompt_tokens", "prediction", "score", "status"):
            assert a[key][field] == b[key][field], (key, field)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`mmx serve --model hf:DIR` as a child process on a given loopback port."""

    def __init__(self, hf_dir: Path, port: int) -> None:
        argv = [sys.executable, "-m", "mmx", "serve", "--model", f"hf:{hf_dir}", "--device", "cpu"]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(port), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            banner = lines.get(timeout=120)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"mmx serve did not start: {self.proc.stderr.read()}") from None
        found = re.search(r"(http://\S+/v1)", banner)
        assert found, banner
        self.url = found.group(1)

    def kill(self) -> None:
        """SIGKILL: no goodbye, open connections are reset."""
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def direct(tmp_path_factory, hf_dir, cli) -> dict[tuple, dict]:
    """The sweep run on the model in-process: what every served run must reproduce."""
    out = tmp_path_factory.mktemp("direct") / "run"
    code, _, err = cli(["eval", "ruler", "--model", f"hf:{hf_dir}", "--device", "cpu", *RULER, "--out", str(out)])
    assert code == 0, err
    found = records(out)
    assert len(found) == TOTAL and all(r["status"] == "ok" for r in found.values())
    return found


@pytest.fixture
def quick_retries(monkeypatch):
    """The eval CLI keeps the openai backend's default retries; make their waits short for the test."""
    import mmx.model.backends.openai as openai_backend

    monkeypatch.setattr(openai_backend, "DEFAULT_BACKOFF", 0.01)


def test_served_model_gives_identical_predictions(direct, hf_dir, tmp_path, cli):
    server = ServeProcess(hf_dir, 0)
    try:
        out = tmp_path / "served"
        code, stdout, err = cli(["eval", "ruler", "--model", f"openai:{server.url}", *RULER, "--out", str(out)])
        assert code == 0, err
    finally:
        server.kill()
    same_answers(records(out), direct)
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["backend"] == "openai" and model["served"]["path"] == str(hf_dir.resolve())
    assert json.loads(stdout)["new_samples"] == TOTAL


def test_server_killed_mid_sweep_keeps_what_finished_and_resumes(
    direct, hf_dir, hf_backend, tmp_path, cli, live_server, quick_retries
):
    port = free_port()
    out = tmp_path / "killed"
    argv = ["eval", "ruler", "--model", f"openai:http://127.0.0.1:{port}/v1", *RULER, "--out", str(out)]
    argv += ["--batch-size", "1"]
    server = ServeProcess(hf_dir, port)

    def kill_after_first_sample() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.proc.poll() is None:
            if (out / "samples.jsonl").exists() and (out / "samples.jsonl").read_text().count("\n") >= 1:
                server.kill()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_first_sample)
    killer.start()
    code, _, err = cli(argv)
    killer.join()
    server.kill()
    assert code == 2 and "cannot reach the model server" in err, err
    partial = records(out)
    assert 0 < len(partial) < TOTAL and all(r["status"] == "ok" for r in partial.values())

    # The same model served again at the same address (in this process, to save a start-up): the run resumes.
    with live_server(hf_backend, port=port):
        code, stdout, err = cli(argv)
    assert code == 0, err
    assert json.loads(stdout)["new_samples"] == TOTAL - len(partial)
    same_answers(records(out), direct)


def test_error_status_mid_sweep_keeps_what_finished_and_resumes(
    direct, hf_backend, tmp_path, cli, live_server, faulty, quick_retries
):
    broken = faulty(hf_backend, RuntimeError("device lost"), after=1)
    with live_server(broken) as server:
        argv = ["eval", "ruler", "--model", f"openai:{server.url}", *RULER, "--out", str(tmp_path / "run")]
        code, _, err = cli([*argv, "--batch-size", "1"])
        assert code == 2 and "HTTP 500: RuntimeError: device lost" in err, err
        assert len(records(tmp_path / "run")) == 1
        broken.fault = None  # the server recovers
        code, _, err = cli([*argv, "--batch-size", "1"])
        assert code == 0, err
    same_answers(records(tmp_path / "run"), direct)
