"""Chat layouts on the tiny models: the context is the user turn, the answer prefix opens the assistant turn and is
left open, and a sweep counts every token the model reads — template included — so prompts land in their window even
at the model's maximum context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.model.backends.base import Prompt, load_backend
from mmx.results.store import RunStore
from mmx.tasks import get_task
from mmx.tasks.fit import tolerance
from mmx.workflows.evaluate.sweep import Sweep, run_sweep

PROMPT = Prompt("The special magic number is 7. What is the special magic number?", " Answer: the number is")


@pytest.fixture(scope="module")
def chat_backend(hf_chat_dir: Path):
    return load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto", batch_size=4)


def test_the_answer_prefix_opens_the_assistant_turn(chat_backend):
    ids = chat_backend.prompt_ids(PROMPT)
    text = chat_backend.tokenizer.tok.decode(ids)
    assert text == (
        "<s><|turn|>user\nThe special magic number is 7. What is the special magic number?<|end|>\n"
        "<|turn|>assistant\nAnswer: the number is"
    )
    assert ids.count(1) == 1 and ids[0] == 1  # BOS once, from the template
    without_prefix = chat_backend.tokenizer.tok.decode(chat_backend.prompt_ids(Prompt(PROMPT.user)))
    assert without_prefix.endswith("<|end|>\n<|turn|>assistant\n")  # an empty assistant turn is opened instead
    assert chat_backend.describe()["chat_template"]["answer_prefix"] == "assistant"


def test_plain_text_and_system_prompts(hf_chat_dir: Path, chat_backend):
    assert chat_backend.prompt_ids("plain") == [1, *chat_backend.tokenizer.encode("plain")]
    with_system = load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto", system_prompt="Be brief.")
    text = with_system.tokenizer.tok.decode(with_system.prompt_ids(PROMPT))
    assert text.startswith("<s><|turn|>system\nBe brief.<|end|>\n<|turn|>user\n")
    assert with_system.describe()["chat_template"]["system_prompt"] == "Be brief."
    with pytest.raises(MmxError, match="--system-prompt needs a chat format"):
        load_backend(f"hf:{hf_chat_dir}", device="cpu", system_prompt="Be brief.")


def test_generation_continues_the_laid_out_prompt(chat_backend):
    ids = chat_backend.prompt_ids(PROMPT)
    direct = chat_backend.tokenizer.decode(chat_backend.generate_tokens([ids], 8)[0])
    assert chat_backend.generate([PROMPT], 8) == [direct]
    plain = chat_backend.tokenizer.decode(chat_backend.generate_tokens([chat_backend.prompt_ids(str(PROMPT))], 8)[0])
    assert chat_backend.generate([str(PROMPT)], 8) == [plain]


def test_chat_text_leaves_bos_to_the_backend(chat_backend):
    messages = [{"role": "user", "content": "hi"}]
    text = chat_backend.chat_text(messages)
    assert not text.startswith("<s>")
    assert chat_backend.prompt_ids(text) == chat_backend.chat_ids(messages)


def test_a_model_without_a_template_says_so(hf_dir: Path, tmp_path: Path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(hf_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(MmxError, match="has no chat template"):
        load_backend(f"hf:{bare}", device="cpu", chat_template="auto")


class ReadCounter:
    """Wraps a backend's `generate_tokens` to keep how many tokens the model was given for each prompt."""

    def __init__(self, backend) -> None:
        self.seen: list[int] = []
        inner = backend.generate_tokens

        def generate_tokens(prompts, max_new_tokens, stop=None, **kwargs):
            self.seen += [len(p) for p in prompts]
            return inner(prompts, max_new_tokens, stop, **kwargs)

        backend.generate_tokens = generate_tokens


@pytest.mark.parametrize("length", [1024, 2048], ids=["1k", "at-the-maximum"])
def test_a_sweep_counts_what_the_model_reads(chat_backend, tmp_path: Path, length: int):
    counter = ReadCounter(chat_backend)
    tasks = {name: get_task(name) for name in ("niah_single_1", "vt")}
    sweep = Sweep("ruler", tasks, [length], samples=2, seed=0)
    store = RunStore(tmp_path / "run")
    store.open({"params": sweep.params(chat_backend.describe())})
    result = run_sweep(chat_backend, sweep, store)
    try:
        assert chat_backend.max_context == 2048
        records = result.records
        assert len(records) == 4 and all(r["status"] == "ok" for r in records)
        assert sorted(counter.seen) == sorted(r["prompt_tokens"] for r in records)
        for record in records:
            budget = tasks[record["task"]].max_new_tokens
            assert length - tolerance(length) <= record["prompt_tokens"] + budget <= length
            assert record["prompt_tokens"] > record["metadata"]["prompt_tokens"]  # the template's tokens count
    finally:
        del chat_backend.generate_tokens


def test_native_models_take_a_template_file_and_their_checkpoints_own(tmp_path: Path):
    template = tmp_path / "chat.jinja"
    template.write_text(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    backend = load_backend("random:tiny", chat_template=str(template))
    ids = backend.prompt_ids(PROMPT)
    assert ids[0] == backend.config.bos_token_id and ids.count(backend.config.bos_token_id) == 1
    assert backend.tokenizer.decode(ids) == f"<user>{PROMPT.user}</user><assistant>Answer: the number is"
    assert backend.describe()["chat_template"]["source"] == str(template)

    checkpoint = tmp_path / "ckpt"
    backend.model.save_pretrained(checkpoint)
    with pytest.raises(MmxError, match="has no chat template"):
        load_backend(f"mmx:{checkpoint}", chat_template="auto")
    (checkpoint / "chat_template.jinja").write_text(template.read_text())
    own = load_backend(f"mmx:{checkpoint}", chat_template="auto")
    assert own.prompt_ids(PROMPT) == ids and own.generate([PROMPT], 6) == backend.generate([PROMPT], 6)
