"""`hf:PATH_OR_NAME`: a transformers causal LM from a local directory or the Hugging Face Hub (downloaded when online,
from the local cache when `HF_HUB_OFFLINE` is set).

The model brings its own tokenizer. Text prompts get the special tokens the tokenizer puts before text (usually BOS);
with `chat_template` a `Prompt` is laid out as a conversation by transformers' own `apply_chat_template`, the answer
prefix opening the assistant turn. `model_args` go to `from_pretrained` (trust_remote_code, attn_implementation,
device_map, dtype, revision) or, for rope scaling and the context length, into the model's config. Generation is
greedy and batched with left padding; log-likelihoods score only the positions asked for (`logits_to_keep`), so a long
context does not cost a `[T, vocab]` logits tensor.

It implements every optional token-level method of `Backend` (`generate_tokens`, `loglikelihood_tokens`,
`score_tokens`), which `mmx serve` and the lm-eval adapter use.

Inside a `prefill_scope` with reuse, models whose cache can be cut back exactly (plain full-attention K/V:
`DynamicCache.is_croppable`) generate one prompt at a time through one kept cache, cut back to the beginning the next
prompt shares with the last, so a shared beginning is prefilled once; others generate as usual.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mmx.errors import MmxError
from mmx.model.backends.base import Backend, PrefillLog, TokenScore, register_backend
from mmx.model.backends.chat import build_chat, hf_renderer
from mmx.model.backends.common import check_options, cut_at_stop, dtype_name, resolve_device, resolve_dtype
from mmx.model.hub import cached_snapshot, load_failure, locate
from mmx.model.tokenizer import HFTokenizer

# Config fields that hold the trained context length, in the order transformers models use them.
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
DEFAULT_CONTEXT = 2048  # when neither config nor tokenizer states one (lm-eval's fallback too)
DEFAULT_BATCH_SIZE = 8
_CUDA_MAX_BATCH = 64
# --model-args that the tokenizer needs as well as the model
_SHARED_ARGS = ("trust_remote_code", "revision", "token", "cache_dir", "subfolder")
_ROPE_ARGS = ("rope_scaling", "rope_parameters")


def _max_context(config: Any, tok: Any) -> int:
    """The trained context: a config field, else the tokenizer's limit when it is a real one, else 2048."""
    for field in _CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**9:  # transformers uses a huge sentinel for "no limit"
        return limit
    return DEFAULT_CONTEXT


def _split_model_args(args: dict[str, Any], dtype: str | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """`--model-args` as (tokenizer kwargs, model kwargs, config overrides). `torch_dtype` is transformers' old name
    for `dtype`; giving a dtype both ways is refused."""
    args = dict(args)
    if "torch_dtype" in args:
        args["dtype"] = args.pop("torch_dtype")
    if "dtype" in args and dtype is not None:
        raise MmxError("the dtype is given twice (--dtype and --model-args dtype)", "keep one of them")
    shared = {key: args[key] for key in _SHARED_ARGS if key in args}
    overrides = {key: args.pop(key) for key in (*_ROPE_ARGS, "max_position_embeddings") if key in args}
    for key in ("config", "pretrained_model_name_or_path"):
        if key in args:
            raise MmxError(f"--model-args {key} is set by mmx", f"drop {key} from --model-args")
    return shared, args, overrides


def _configured(source: str, shared: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The model's config with rope scaling merged into its rope parameters (so `rope_theta` survives, which
    passing `rope_scaling=` to `from_pretrained` would drop) and a new context length; None when nothing changes."""
    if not overrides:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, **shared)
    rope = next((overrides[key] for key in _ROPE_ARGS if key in overrides), None)
    if rope is not None:
        if not isinstance(rope, dict):
            example = 'rope_scaling={"rope_type":"yarn","factor":4.0}'
            raise MmxError("--model-args rope_scaling must be a JSON object", f"e.g. {example}")
        current = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        config.rope_parameters = {**current, **rope}
    if "max_position_embeddings" in overrides:
        config.max_position_embeddings = int(overrides["max_position_embeddings"])
    return config


class HFBackend(Backend):
    """A loaded transformers causal LM with its tokenizer: greedy batched generation and log-likelihoods."""

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        chat_template: str | bool | None = None,
        system_prompt: str | None = None,
        max_context: int | None = None,
        model_args: dict[str, Any] | None = None,
    ) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise MmxError("hf: models need the transformers package", "pip install 'mmx[hf]'") from None
        local = locate(name_or_path)
        source = str(local) if local is not None else name_or_path
        self.spec = f"hf:{name_or_path}"
        self.model_args = dict(model_args or {})
        shared, kwargs, overrides = _split_model_args(self.model_args, dtype)
        placed = "device_map" in kwargs  # accelerate places the weights; mmx does not move them
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(kwargs.pop("dtype", dtype), self.device)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' loading bars would interleave with mmx's own output
        try:
            tok = AutoTokenizer.from_pretrained(source, **shared)
            config = _configured(source, shared, overrides)
            if config is not None:
                kwargs["config"] = config
            model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype, **kwargs)
        except (OSError, ValueError, ImportError) as err:
            if "accelerate" in str(err):
                raise MmxError(
                    "--model-args device_map needs the accelerate package", "pip install accelerate"
                ) from err
            raise load_failure(name_or_path, err, "causal LM") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        snapshot = None if local is not None else cached_snapshot(name_or_path, shared.get("revision"))
        self.path = local if local is not None else snapshot[0] if snapshot else None
        self.revision = snapshot[1] if snapshot else None
        self.name = local.name if local is not None else name_or_path
        self.model = (model if placed else model.to(self.device)).eval()
        if placed:
            self.device = next(self.model.parameters()).device
        self.tokenizer = HFTokenizer(tok)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.batch_size = max(1, int(batch_size or DEFAULT_BATCH_SIZE))
        self.max_context = int(max_context or _max_context(model.config, tok))
        self.chat = build_chat(
            chat_template,
            own=getattr(tok, "chat_template", None),
            renderer=lambda template: hf_renderer(tok, template),
            system=system_prompt,
            bos_token=tok.bos_token,
            where="this model's tokenizer",
        )
        self.prefix_ids: list[int] = tok("", add_special_tokens=True)["input_ids"]
        eos = model.generation_config.eos_token_id
        eos = tok.eos_token_id if eos is None else eos
        self.eos_ids: list[int] = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        start = self.prefix_ids or [i for i in (tok.bos_token_id, *self.eos_ids) if i is not None][:1]
        self.start_ids: list[int] = list(start)  # what an empty context conditions on
        self.pad_id = next(i for i in (tok.pad_token_id, *self.eos_ids, 0) if i is not None)
        accepted = inspect.signature(self.model.forward).parameters
        self._takes_positions = "position_ids" in accepted
        self._takes_keep = "logits_to_keep" in accepted
        self._shared: _SharedCache | None = None  # an open prefill scope

    # --- text-level Backend protocol -------------------------------------------------------------------------------

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """Greedy continuations, cut before the first stop string or EOS."""
        stops = [s for s in (stop or []) if s]
        new = self.generate_tokens([self.prompt_ids(p) for p in prompts], max_new_tokens, stops)
        return [cut_at_stop(self.tokenizer.decode(ids), stops) for ids in new]

    def describe(self) -> dict[str, Any]:
        """Enough to reproduce: where the weights came from (path, cache commit), architecture, dtype, device."""
        config = self.model.config
        return {
            "spec": self.spec,
            "name": self.name,
            "backend": "hf",
            "random_weights": False,
            "path": str(self.path) if self.path is not None else None,
            "revision": self.revision,
            "model_args": self.model_args or None,
            "model_type": getattr(config, "model_type", None),
            "architectures": getattr(config, "architectures", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "tokenizer": self.tokenizer.describe(),
            "chat_template": self.chat.describe() if self.chat is not None else None,
            "max_context": self.max_context,
            "dtype": dtype_name(self.dtype),
            "device": str(self.device),
        }

    def auto_batch_size(self, length: int, max_new_tokens: int) -> int:
        """`--batch-size auto`: on CUDA, as many sequences as their K/V caches fit in 60% of free memory; one on the
        CPU, where a batch buys little speed."""
        if self.device.type != "cuda":
            return 1
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", 1)
        heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        elem = torch.finfo(self.dtype).bits // 8
        tokens = length + max_new_tokens
        per_sequence = 2 * layers * heads * head_dim * elem * tokens + 16 * config.hidden_size * elem * tokens
        free = torch.cuda.mem_get_info(self.device)[0]
        return max(1, min(_CUDA_MAX_BATCH, int(0.6 * free // per_sequence)))

    # --- token-level methods (used by mmx serve and the lm-eval bridge) ----------------------------------------------

    @torch.inference_mode()
    def generate_tokens(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] | None = None, *, hook: Any = None
    ) -> list[list[int]]:
        """Greedy new token ids for token-id prompts taken as the model's whole input, in batches of similar lengths.
        A row ends before EOS, or with the token that completes a stop string (callers cut the text there). `hook`
        hears each token as it is chosen and may cancel between steps."""
        from transformers import GenerationConfig, StoppingCriteriaList

        stops = [s for s in (stop or []) if s]
        for ids in prompts:
            if len(ids) + max_new_tokens > self.max_context:
                raise MmxError(
                    f"a prompt of {len(ids)} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
                    f"{self.max_context} tokens",
                    "use shorter lengths, or pass max_context if the model extrapolates",
                )
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids or None,
            stop_strings=stops or None,
        )
        if self._shared is not None:
            return self._shared.generate(self, [p or self.start_ids for p in prompts], config, stops)
        outputs: list[list[int]] = [[] for _ in prompts]
        for batch in self._batches([p or self.start_ids for p in prompts]):
            input_ids, mask = self._left_pad([ids for _, ids in batch])  # [B, L] each
            watch = [] if hook is None else [_StepWatch(hook, [index for index, _ in batch], self.eos_ids)]
            if hook is not None:
                hook.check()
            generated = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                tokenizer=self.tokenizer.tok if stops else None,
                stopping_criteria=StoppingCriteriaList(watch),
            )
            new = generated[:, input_ids.shape[1] :].tolist()  # [B, new tokens]
            for (index, _), ids in zip(batch, new, strict=True):
                outputs[index] = self._until_eos(ids)
        return outputs

    def loglikelihood_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Token-level log-likelihoods; an empty context means the start of a text (BOS, or EOS without one). A pair
        longer than the context keeps its continuation and the nearest context tokens, as lm-eval does."""
        sequences, starts = [], []
        for context, continuation in pairs:
            context = list(context) or list(self.start_ids)
            if not context:
                raise MmxError("an empty context needs a BOS or EOS token", "this tokenizer defines neither")
            if len(continuation) > self.max_context:
                raise MmxError(
                    f"a continuation of {len(continuation)} tokens exceeds the model's context of {self.max_context}",
                    "score shorter continuations",
                )
            whole = (context + list(continuation))[-(self.max_context + 1) :]
            sequences.append(whole)
            starts.append(len(whole) - len(continuation))
        scored = self._score(sequences, starts, top_k=0)
        return [(sum(s.logprob for s in row), all(s.greedy for s in row)) for row in scored]

    def score_tokens(self, sequences: list[list[int]], top_k: int = 1, start: int = 1) -> list[list[TokenScore]]:
        """Per-position scores of each sequence from position `start` on (position 0 has nothing to condition on)."""
        for ids in sequences:
            if len(ids) - 1 > self.max_context:
                raise MmxError(
                    f"a sequence of {len(ids)} tokens exceeds the model's context of {self.max_context}",
                    "score a shorter text",
                )
        return self._score([list(s) for s in sequences], [max(1, start)] * len(sequences), top_k)

    # --- prefix reuse ----------------------------------------------------------------------------------------------

    @contextmanager
    def prefill_scope(self, prompts: list[str], reuse: bool = True) -> Iterator[PrefillLog | None]:
        """With `reuse`, and a model whose cache can be cut back exactly, the scope's `generate` calls share one cache
        (`_SharedCache`) and log what each prompt prefilled; otherwise generation is unchanged and nothing is logged."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config) if reuse else None
        if cache is None or not getattr(cache, "is_croppable", False):
            yield None
            return
        self._shared = _SharedCache(cache)
        try:
            yield self._shared.log
        finally:
            self._shared = None

    # --- internals -------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _score(self, sequences: list[list[int]], starts: list[int], top_k: int) -> list[list[TokenScore]]:
        """Score `sequences[i][starts[i]:]`, each token given everything before it, in left-padded batches."""
        results: list[list[TokenScore]] = [[] for _ in sequences]
        for batch in self._batches(sequences):
            inputs = [ids[:-1] for _, ids in batch]  # the last token is only ever predicted
            keep = max(len(ids) - starts[i] for i, ids in batch)
            if keep <= 0:
                continue
            input_ids, mask = self._left_pad(inputs)  # [B, L]
            kwargs: dict[str, Any] = {"attention_mask": mask}
            if self._takes_positions:  # left padding: positions count real tokens only
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            if self._takes_keep:
                kwargs["logits_to_keep"] = keep
            logits = self.model(input_ids, **kwargs).logits[:, -keep:]  # [B, keep, V]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, (index, ids) in enumerate(batch):
                n = len(ids) - starts[index]
                if n <= 0:
                    continue
                lp = logprobs[row, keep - n :]  # [n, V]: the predictions of ids[start:]
                target = torch.tensor(ids[starts[index] :], device=lp.device)
                picked = lp.gather(1, target[:, None])[:, 0].tolist()
                greedy = (lp.argmax(-1) == target).tolist()
                if top_k > 0:
                    values, indices = lp.topk(top_k, dim=-1)  # [n, k]
                    tops = [
                        tuple(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)
                    ]
                else:
                    tops = [()] * n
                results[index] = [TokenScore(p, g, t) for p, g, t in zip(picked, greedy, tops, strict=True)]
        return results

    def _batches(self, sequences: list[list[int]]) -> list[list[tuple[int, list[int]]]]:
        """(index, ids) groups of at most `batch_size`, longest first, so each batch pads little."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        return [
            [(i, sequences[i]) for i in order[at : at + self.batch_size]]
            for at in range(0, len(order), self.batch_size)
        ]

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] padded on the left, and the attention mask [B, L] (1 on real tokens)."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _until_eos(self, ids: list[int]) -> list[int]:
        """New tokens up to (not including) the first EOS; what follows it is padding."""
        for at, token in enumerate(ids):
            if token in self.eos_ids:
                return ids[:at]
        return ids


class _SharedCache:
    """One cache kept across a prefill scope's `generate` calls. It holds `ids` (the last prompt) and that prompt's
    generated tokens; before each prompt it is cut back to the beginning they share, and generation feeds the rest."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.ids: list[int] = []
        self.log = PrefillLog()

    @torch.inference_mode()
    def generate(self, backend: HFBackend, prompts: list[list[int]], config: Any, stops: list[str]) -> list[list[int]]:
        """Greedy new tokens per prompt, one prompt at a time in the order where neighbours share the most."""
        from mmx.model.prefix import common_prefix, walk_order

        outputs: list[list[int]] = [[] for _ in prompts]
        self.log.prefilled, self.log.read = [0] * len(prompts), [0] * len(prompts)
        for index in walk_order(prompts):
            ids = prompts[index]
            shared = min(common_prefix(self.ids, ids), len(ids) - 1)
            held = self.cache.get_seq_length()
            if held > shared:
                self.cache.crop(shared - held)  # a negative count removes that many tokens from the end
            input_ids = torch.tensor([ids], device=backend.device)
            self.ids = []  # until this generation completes, the cache holds nothing a later prompt may trust
            generated = backend.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=self.cache,
                generation_config=config,
                tokenizer=backend.tokenizer.tok if stops else None,
            )
            outputs[index] = backend._until_eos(generated[0, len(ids) :].tolist())
            self.ids = ids
            self.log.read[index], self.log.prefilled[index] = shared, len(ids) - shared
        return outputs


class _StepWatch:
    """A transformers stopping criterion that never stops generation itself: after each step it hands the new token
    of every unfinished row to the hook (by prompt index) and lets the hook cancel."""

    def __init__(self, hook: Any, rows: list[int], eos_ids: list[int]) -> None:
        self.hook, self.rows, self.eos = hook, rows, set(eos_ids)
        self.finished: set[int] = set()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        for position, token in enumerate(input_ids[:, -1].tolist()):  # the token each row just chose
            if position in self.finished:
                continue
            if token in self.eos:
                self.finished.add(position)
                continue
            self.hook.token(self.rows[position], token)
        self.hook.check()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def from_spec(rest: str, **options: Any) -> HFBackend:
    """`hf:PATH_OR_NAME` with options device, dtype, batch_size, chat_template, system_prompt, max_context,
    model_args."""
    known = ("device", "dtype", "batch_size", "chat_template", "system_prompt", "max_context", "model_args")
    return HFBackend(rest, **check_options(options, known, "hf: models"))


register_backend("hf", from_spec)
