"""Tasks by name, the suites, and option checking, so `get_task("niah_single_2", corpus=...)` is all a runner needs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.base import Task
from mmx.tasks.common_words import CommonWords
from mmx.tasks.freq_words import FrequentWords
from mmx.tasks.kamradt import Niah
from mmx.tasks.niah import RULER_NIAH, NiahTask
from mmx.tasks.qa import QaTask, SyntheticSource, qa_task
from mmx.tasks.variable_tracking import VariableTracking

RULER_TASKS = [
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
    "cwe",
    "fwe",
    "qa_1",
    "qa_2",
]
SUITES: dict[str, list[str]] = {"ruler": RULER_TASKS, "niah": ["niah"]}

_FACTORIES: dict[str, Callable[..., Task]] = {
    **{name: partial(NiahTask, name, spec) for name, spec in RULER_NIAH.items()},
    "vt": VariableTracking,
    "cwe": CommonWords,
    "fwe": FrequentWords,
    "qa_1": partial(qa_task, "qa_1"),
    "qa_2": partial(qa_task, "qa_2"),
    "synth_qa_1": partial(QaTask, "synth_qa_1", SyntheticSource(hops=1), "qa_1"),
    "synth_qa_2": partial(QaTask, "synth_qa_2", SyntheticSource(hops=2), "qa_2"),
    "niah": Niah,
}


def list_tasks() -> list[str]:
    """Every task name, RULER's in their usual order first."""
    return [name for name in RULER_TASKS if name in _FACTORIES] + sorted(set(_FACTORIES) - set(RULER_TASKS))


# options a factory's signature takes that a task of that name has no use for (needles in noise need no essays)
_UNUSED = {name: {"corpus"} for name, spec in RULER_NIAH.items() if spec.haystack != "essay"}


def task_options(name: str) -> dict[str, Any]:
    """The keyword options a task uses, with their defaults (its own, then those every task takes)."""
    factory = _factory(name)
    target = factory.func if isinstance(factory, partial) else factory
    signatures = [c.__init__ for c in target.__mro__ if "__init__" in c.__dict__] if isinstance(target, type) else []
    options: dict[str, Any] = {}
    for function in [target, *signatures, Task.__init__]:
        if isinstance(function, type):
            continue
        for param in inspect.signature(function).parameters.values():
            if param.kind is param.KEYWORD_ONLY:
                options.setdefault(param.name, param.default)
    return {key: value for key, value in options.items() if key not in _UNUSED.get(name, ())}


def get_task(name: str, **options: Any) -> Task:
    """The task called `name`, built with `options`; unknown names and options are one clear error."""
    factory = _factory(name)
    unknown = sorted(set(options) - set(task_options(name)))
    if unknown:
        accepted = ", ".join(task_options(name)) or "none"
        raise MmxError(f"task {name} has no option {', '.join(unknown)}", f"options it accepts: {accepted}")
    defaults = task_options(name)
    for key, value in options.items():
        _check_option_type(name, key, value, defaults[key])
    return factory(**options)


def _check_option_type(task: str, key: str, value: Any, default: Any) -> None:
    """An option must have its default's kind of value (a number where the default is a number, and so on)."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "true or false"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        ((list, tuple), "a list"),
    ]
    for kind, words in kinds:
        if isinstance(default, kind):
            accepted = (int, float) if kind is float else kind
            wrong_bool = isinstance(value, bool) and kind is not bool
            if not isinstance(value, accepted) or wrong_bool:
                raise MmxError(f"task {task} option {key} must be {words}, got {value!r}", f"e.g. {key}={default!r}")
            return


def _factory(name: str) -> Callable[..., Task]:
    if name not in _FACTORIES:
        raise MmxError(f"unknown task {name!r}", f"choose one of {', '.join(list_tasks())} (see `mmx tasks list`)")
    return _FACTORIES[name]
