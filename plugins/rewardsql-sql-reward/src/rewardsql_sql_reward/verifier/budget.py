"""The training-time SQL budget: how long a predicted query may run, and a whole batch.

At evaluation every query gets the same fixed ``timeout`` (the official BIRD/Spider rule). In
training that rule lets a policy that drifted into runaway SQL (a recursive CTE without end is
one line of CoCTE) hold every worker for the full timeout per query, one after another: a GRPO
batch of distinct runaways then costs hours. Under a :class:`Budget` a prediction may run
``max(floor, factor x its gold query's measured time)``, at most ``timeout``, and the whole
``verify_batch`` call ends at ``batch_timeout``: what is unfinished then is a ``timeout``.

Predictions are not known to be fast or slow in advance, so they run in rounds (iterative
deepening): every prediction first gets :data:`FIRST_SLICE_S` of CPU time, the ones that used it
up run again with a slice :data:`SLICE_GROWTH` times longer, up to their budget (wall-clock
time). A slow query thus wastes at most about a third of its own time in earlier rounds, and a
batch of runaways cannot keep the fast queries behind it from running before the deadline.
Slices count CPU time, not wall-clock time, so that a worker waiting for a CPU on a loaded
machine does not push a fast query into a later round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from rewardsql_sql_reward.verifier._worker import SLICE_ERROR
from rewardsql_sql_reward.verifier.pool import DEADLINE_ERROR, Outcome, Task

#: ``WorkerPool.run``: tasks and a monotonic deadline in, outcomes in input order out.
RunTasks = Callable[..., list[Outcome]]

#: The first slice of every prediction, seconds of CPU time: typical text-to-SQL queries on
#: Spider/BIRD-sized databases finish within it (the benchmark's take about 0.1 ms).
FIRST_SLICE_S = 0.002
#: Each later round's slice is this many times the previous one's.
SLICE_GROWTH = 4.0


@dataclass(frozen=True)
class Budget:
    """Limits of a training-time ``verify_batch`` (see the module docstring).

    Attributes:
        floor: seconds a prediction may always run, however fast its gold query.
        factor: a prediction may run this many times its gold query's measured time.
        batch_timeout: seconds one ``verify_batch`` call may take; None: twice the per-query
            ``timeout``.
    """

    floor: float = 1.0
    factor: float = 10.0
    batch_timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.floor > 0 or not self.factor > 0:
            raise ValueError(f"budget floor and factor must be positive, got {self.floor!r} "
                             f"and {self.factor!r}")
        if self.batch_timeout is not None and not self.batch_timeout > 0:
            raise ValueError(f"batch_timeout must be positive, got {self.batch_timeout!r}")

    def query_seconds(self, gold_seconds: float, timeout: float) -> float:
        """The budget of a prediction whose gold query took ``gold_seconds``."""
        return min(timeout, max(self.floor, self.factor * gold_seconds))

    def batch_seconds(self, timeout: float) -> float:
        """The deadline of one ``verify_batch`` call, seconds after it starts."""
        return self.batch_timeout if self.batch_timeout is not None else 2.0 * timeout

    def describe(self, timeout: float) -> str:
        """One line for logs and ``rewardsql sql score``."""
        return (f"training budget: max({self.floor:g} s, {self.factor:g} x gold time) per "
                f"query, at most {timeout:g} s; {self.batch_seconds(timeout):g} s per batch")


def run_budgeted(run: RunTasks, tasks: Sequence[Task],
                 golds_of: Mapping[int, Sequence[int | Outcome]], budget: Budget,
                 timeout: float) -> list[Outcome]:
    """Outcomes of ``tasks`` (in order) under ``budget``, by rounds of growing CPU slices.

    ``golds_of`` maps the index of each prediction task to its gold queries: indices of gold
    tasks in ``tasks`` or cached gold outcomes. Tasks not in it are gold queries: they run once,
    ahead of the predictions in the first round, with the full ``timeout``. A prediction's
    budget is :meth:`Budget.query_seconds` of its slowest gold (``timeout`` while a gold has not
    run). Every task still unfinished at the batch deadline is a ``timeout`` with the error
    :data:`~rewardsql_sql_reward.verifier.pool.DEADLINE_ERROR`.
    """
    deadline = time.monotonic() + budget.batch_seconds(timeout)
    outcomes: list[Outcome | None] = [None] * len(tasks)

    def limit(index: int) -> float:
        seconds = 0.0
        for gold in golds_of[index]:
            outcome = gold if isinstance(gold, Outcome) else outcomes[gold]
            if outcome is None:
                return timeout
            seconds = max(seconds, outcome.seconds)
        return budget.query_seconds(seconds, timeout)

    todo = sorted(range(len(tasks)), key=lambda i: i in golds_of)  # golds first
    slice_s = FIRST_SLICE_S
    while todo:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sent = []
        for index in todo:
            wall = timeout if index not in golds_of else limit(index)
            cpu = slice_s if index in golds_of and slice_s < wall else None
            sent.append(replace(tasks[index], timeout=min(left, wall), cpu_slice=cpu))
        again = []
        for index, task, outcome in zip(todo, sent, run(sent, deadline=deadline), strict=True):
            outcomes[index] = outcome
            if outcome.status != "timeout" or outcome.error == DEADLINE_ERROR:
                continue
            if outcome.error == SLICE_ERROR:
                again.append(index)
            elif task.timeout >= left:  # it had what was left of the batch's time
                outcomes[index] = Outcome("timeout", error=DEADLINE_ERROR)
        todo = again
        slice_s *= SLICE_GROWTH
    for index in range(len(tasks)):
        if outcomes[index] is None or index in todo:
            outcomes[index] = Outcome("timeout", error=DEADLINE_ERROR)
    for index in golds_of:  # the budget, not the timeout of one round, explains a timeout
        outcome = outcomes[index]
        if outcome is not None and outcome.status == "timeout" and outcome.error != DEADLINE_ERROR:
            outcomes[index] = replace(outcome, error=f"timed out after its training budget of "
                                                     f"{limit(index):.3g} s")
    return outcomes  # type: ignore[return-value]
