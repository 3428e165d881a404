"""`--devices`: start the torchrun job on this machine instead of asking the user to type `torchrun`.

The command runs again as `python -m mmx ...` in one process per device, through torchrun's own launcher
(`torch.distributed.run`, standalone rendezvous on a free local port), with `--devices` dropped and `--device`
set so each rank takes its GPU (`cuda:LOCAL_RANK` among the GPUs named, via CUDA_VISIBLE_DEVICES) or the CPU. The
ranks find each other exactly as under a hand-typed `torchrun --nproc-per-node N -m mmx ...`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mmx.errors import MmxError


def parse_devices(text: str) -> list[str]:
    """`0,1,2,3` -> GPU ids; `cpu,cpu` -> two CPU ranks. One kind per job, each GPU at most once."""
    devices = [part.strip().removeprefix("cuda:") for part in text.split(",") if part.strip()]
    if not devices:
        raise MmxError("--devices names no device", "write GPU ids (--devices 0,1,2,3) or cpu,cpu")
    gpus = [d for d in devices if d != "cpu"]
    if gpus and len(gpus) != len(devices):
        raise MmxError(f"--devices {text} mixes GPUs and the CPU", "run a job on GPUs or on the CPU, not both")
    if any(not d.isdigit() for d in gpus):
        bad = next(d for d in gpus if not d.isdigit())
        raise MmxError(f"bad device {bad!r} in --devices", "write GPU ids (--devices 0,1,2,3) or cpu,cpu")
    if len(set(gpus)) != len(gpus):
        raise MmxError(f"--devices {text} names a GPU twice", "each rank needs a GPU of its own")
    return devices


def visible_devices(gpus: Sequence[str]) -> str:
    """CUDA_VISIBLE_DEVICES for the ranks: the GPUs named, counted among those this process sees (a job started
    where CUDA_VISIBLE_DEVICES=4,5,6,7 takes --devices 0,1 as GPUs 4 and 5, as torch would)."""
    seen = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not seen:
        return ",".join(gpus)
    beyond = [g for g in gpus if int(g) >= len(seen)]
    if beyond:
        raise MmxError(
            f"--devices names GPU {beyond[0]}, but CUDA_VISIBLE_DEVICES shows this process {len(seen)}",
            f"name GPUs 0 to {len(seen) - 1} (they are {','.join(seen)} on the machine)",
        )
    return ",".join(seen[int(g)] for g in gpus)


def child_argv(argv: Sequence[str], devices: Sequence[str]) -> list[str]:
    """The argv every rank runs: the command without --devices, with --device cuda (or cpu) in place of any other."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--devices", "--device"):
            skip = True
            continue
        if arg.startswith(("--devices=", "--device=")):
            continue
        out.append(arg)
    return [*out, "--device", "cpu" if devices[0] == "cpu" else "cuda"]


def launch(argv: Sequence[str], devices: Sequence[str], tp: int = 1) -> int:
    """Run `mmx ARGV` (argv without the leading `mmx`) as one rank per device; the exit code of the job."""
    if len(devices) % tp:
        raise MmxError(f"--tp {tp} does not divide the {len(devices)} devices", "name a multiple of --tp devices")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(devices)))}
    if devices[0] != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(devices)
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(len(devices)), "--module", "mmx", *child_argv(argv, devices)]
    )
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        run(args)
    except ChildFailedError as err:  # each rank printed its own error; the job's code is the first failure's
        first = min(err.failures.values(), key=lambda failure: failure.timestamp)
        return first.exitcode if first.exitcode > 0 else 128 - first.exitcode  # killed by signal N: 128 + N
    except SignalException as err:  # Ctrl-C or a kill of this launcher: torchrun has stopped the ranks
        return 128 + int(err.sigval)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0
