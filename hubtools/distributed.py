"""Several processes of one run (``torchrun``, ``accelerate launch``): who is main, waits that end, threads.

The launcher gives each process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; one process
alone has none of them and everything here is then a plain function call. The process group is accelerate's
(``PartialState``: NCCL on GPUs, gloo on CPU), so the trainer's ``Accelerator`` later finds it set up. The
waits of the stages around training (the main process prepares the concept set while the others wait; each
process renders its share of the class images and the main one gathers them) go over a separate gloo group
with a timeout (``HUBTOOLS_DISTRIBUTED_TIMEOUT``, minutes, default 120): no wait outlives it, and a failure in
any process is raised in every process, the failing process's error first, instead of leaving the others
waiting. Only the main process reports; an error that came from another process is not printed twice.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from hubtools.errors import HubtoolsError

T = TypeVar("T")

TIMEOUT_ENV = "HUBTOOLS_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_MINUTES = 120.0

_control_group: Any = None  # the gloo group of the waits; None until set_up() under a launcher


class DistributedError(HubtoolsError):
    """A wait that failed: another process failed or stopped, or the timeout passed. ``elsewhere``: the error was
    raised by another process, whose own message the main process prints (the others stay silent)."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int = 1, elsewhere: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.elsewhere = elsewhere


# -- who am I --------------------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """How many processes the run has (1 without a launcher)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's number, 0 for the main process."""
    return _env_int("RANK", 0)


def local_world_size() -> int:
    """How many processes of the run share this machine."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", world_size()))


def is_main() -> bool:
    return rank() == 0


def is_local_main() -> bool:
    """The first process on this machine (it writes what each machine keeps for itself: its caches)."""
    return _env_int("LOCAL_RANK", 0) == 0


def launched() -> bool:
    """True under ``torchrun`` / ``accelerate launch`` with more than one process."""
    return world_size() > 1


def timeout() -> timedelta:
    """How long a process waits for the others at one point (``HUBTOOLS_DISTRIBUTED_TIMEOUT`` minutes)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        minutes = float(raw) if raw else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        raise HubtoolsError(f"{TIMEOUT_ENV}={raw!r} is not a number of minutes") from None
    return timedelta(minutes=minutes)


# -- threads -------------------------------------------------------------------------------------------


def threads_per_process() -> int:
    """This process's share of the machine's cores: ``OMP_NUM_THREADS`` when set, else the cores this process
    may use divided among the run's processes on this machine."""
    given = _env_int("OMP_NUM_THREADS", 0)
    if given > 0:
        return given
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // local_world_size())


def passive_waiting() -> None:
    """Idle OpenMP threads sleep instead of spinning (two spinning torch processes on shared cores slow each
    other about 20x). OpenMP reads this when torch is imported: call it first (the CLI's entry point does)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_threads() -> int:
    """Give torch this process's share of the cores; returns the count."""
    import torch

    count = threads_per_process()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


# -- the process group ---------------------------------------------------------------------------------


def set_up(cpu: bool | None = None) -> None:
    """Join the run's process group (accelerate's) and open the gloo group of the waits; nothing without a
    launcher. Every process calls it, at the same point (the group is made collectively)."""
    global _control_group
    if not launched() or _control_group is not None:
        return
    import torch.distributed as dist
    from accelerate import PartialState

    set_threads()
    if cpu is None:
        import torch

        cpu = not torch.cuda.is_available()
    PartialState(cpu=cpu)
    atexit.register(_tear_down)
    # its own gloo group, also beside NCCL: the waits carry Python objects, on the CPU, with our timeout
    _control_group = dist.new_group(backend="gloo", timeout=timeout())


def _tear_down() -> None:
    global _control_group
    import torch.distributed as dist

    _control_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def _group():
    if _control_group is None:
        set_up()
    return _control_group


def _exchange(what: str, payload: Any) -> list[Any]:
    """Every process's ``payload``, in rank order, on every process; a timeout or a lost process raises."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size()
    try:
        dist.all_gather_object(gathered, payload, group=_group())
    except Exception as error:  # gloo says "Connection closed by peer", "Timed out waiting ..." and the like
        minutes = round(timeout().total_seconds() / 60, 1)
        raise DistributedError(
            f"process {rank()} stopped waiting for the others at {what}: a process stopped, or none came within "
            f"{minutes} min (set {TIMEOUT_ENV} in minutes for longer stages) [{type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}]"
        ) from None
    return gathered


def _outcome(fn: Callable[[], T]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except BaseException as error:  # noqa: BLE001 - sent to the others, then raised here again
        return ("error", error)


def _raise_first_failure(what: str, outcomes: list[tuple[str, Any]]) -> None:
    """Raise the first failed process's error: its own exception in that process, a ``DistributedError``
    with its message in the others."""
    for index, (status, value) in enumerate(outcomes):
        if status != "error":
            continue
        if index == rank():
            raise value
        if is_main():  # the main process prints what went wrong in the other one
            message = f"process {index} failed at {what}: {value.message if isinstance(value, HubtoolsError) else value}"
            raise DistributedError(message, exit_code=getattr(value, "exit_code", 1))
        raise DistributedError(f"process {index} failed at {what}", exit_code=getattr(value, "exit_code", 1),
                               elsewhere=True)


def _sendable(value: Any) -> Any:
    """``value`` when it pickles, else None (the others do not get a result that cannot travel, but do not
    wait for it either)."""
    import pickle

    try:
        pickle.dumps(value)
        return value
    except Exception:  # noqa: BLE001
        return None


def _picklable_error(error: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return HubtoolsError(f"{type(error).__name__}: {error}")


def on_main(what: str, fn: Callable[[], T]) -> T:
    """``fn()`` on the main process while the others wait; every process gets its result (None elsewhere when it
    does not pickle). When it fails, it raises there, and the others raise a quiet ``DistributedError`` (the
    main process prints it)."""
    if not launched():
        return fn()
    status, value = _outcome(fn) if is_main() else ("ok", None)
    outcomes = _exchange(what, (status, _picklable_error(value) if status == "error" else _sendable(value)))
    if status == "error":
        raise value
    if is_main():
        return value
    main_status, main_value = outcomes[0]
    if main_status == "error":
        raise DistributedError(f"the main process failed at {what}", exit_code=getattr(main_value, "exit_code", 1),
                               elsewhere=True)
    return main_value


def main_only(what: str, fn: Callable[[], T]) -> T | None:
    """``fn()`` on the main process while the others wait, its result kept there (None elsewhere, nothing sent:
    for results too large to travel, such as loaded models or every image). Failures as in ``on_main``."""
    if not launched():
        return fn()
    kept: list[T] = []
    on_main(what, lambda: kept.append(fn()))
    return kept[0] if kept else None


def each(what: str, fn: Callable[[], T]) -> list[T]:
    """``fn()`` on every process; every process gets the list of results in rank order. A failure in any
    process raises in all of them (that process's error first)."""
    if not launched():
        return [fn()]
    status, value = _outcome(fn)
    outcomes = _exchange(what, (status, _picklable_error(value) if status == "error" else value))
    if status == "error":
        raise value
    _raise_first_failure(what, outcomes)
    return [value for _, value in outcomes]


def barrier(what: str) -> None:
    """Wait for every process (up to the timeout)."""
    if launched():
        _exchange(what, ("ok", None))


def mine(index: int) -> bool:
    """Whether item ``index`` of a split stage is this process's: items go round the processes in turn, so
    each does about 1/N of them."""
    return index % world_size() == rank()
