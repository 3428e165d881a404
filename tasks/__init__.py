"""Long-context tasks: haystacks, needle-in-a-haystack, the 13 RULER tasks, scoring.

`get_task(name, **options)` returns a `Task` whose `samples(tokenizer, length, n, seed)` builds prompts of exactly
`length` tokens (prompt + answer prefix + answer budget) in the given tokenizer and whose `score(sample, prediction)`
applies RULER's metric. `SUITES` names the task lists the runners sweep.
"""

from mmx.tasks.base import Task
from mmx.tasks.registry import RULER_TASKS, SUITES, get_task, list_tasks, task_options
from mmx.tasks.sample import Sample
from mmx.tasks.scoring import string_match_all, string_match_part

__all__ = [
    "RULER_TASKS",
    "SUITES",
    "Sample",
    "Task",
    "get_task",
    "list_tasks",
    "string_match_all",
    "string_match_part",
    "task_options",
]
