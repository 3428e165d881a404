"""`mmx tasks list` and `mmx tasks show`, run through the console entry point."""

from __future__ import annotations

import json

import pytest

from mmx.commands.app import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tasks", "list", "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and len(listed["suites"]["ruler"]) == 13
    assert listed["tasks"]["qa_1"]["substitute_for"] == "qa_1"
    assert listed["tasks"]["cwe"]["max_new_tokens"] == 120


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tasks", "list"], capsys)
    assert code == 0 and "niah_multikey_3" in out and "synth_qa_2" in out


def test_show_prints_the_exact_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    from mmx.model import ByteTokenizer
    from mmx.tasks import get_task

    code, out, _ = run(["tasks", "show", "niah_multivalue", "--length", "4k", "--index", "3", "--seed", "2"], capsys)
    sample = get_task("niah_multivalue").sample(ByteTokenizer(), 4096, 3, seed=2)
    assert code == 0 and out.startswith(sample.prompt + sample.answer_prefix + "\n")
    assert json.dumps(sample.references) in out and sample.prompt_hash in out


def test_show_with_options_and_elision(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tasks", "show", "niah", "-l", "16k", "-o", "depths=3", "-o", "spacing=sigmoid", "--elide", "200"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "characters …]" in out and '"depth_index": 0' in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tasks", "show", "nope"], "unknown task"),
        (["tasks", "show", "cwe", "-l", "1k"], "too short"),
        (["tasks", "show", "vt", "-l", "4q"], "bad size"),
        (["tasks", "show", "vt", "-o", "novalue"], "KEY=VALUE"),
        (["tasks", "show", "vt", "--tokenizer", "/no/tokenizer.json"], "no tokenizer"),
    ],
)
def test_show_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
