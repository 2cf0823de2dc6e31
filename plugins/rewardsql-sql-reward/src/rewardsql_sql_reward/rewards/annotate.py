"""The PRM's input text: one builder for labelling, PRM training data, scoring and reranking.

The published code built the PRM's text two ways (RL: ``LIMIT 50`` and the raw error; best-of-N:
no limit and a ``Total SQL result:0,`` prefix), so the PRM saw other text at inference than in
training. Here :func:`build_prm_inputs` is the only builder: a prompt and CoCTE steps, each step
followed by ``<result>...</result>`` (its execution result, spec/cocte.md) when
``execution_results`` is on, then the step tag. The PRM's token ids are then built segment by
segment from ``prompt`` and ``annotated_steps`` (``rewardsql.training.prm.encode``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardsql_sql_reward.rewards.cocte import (
    RESULT_CHARS,
    RESULT_ROWS,
    annotation_failed,
    split_steps,
    step_annotations_batch,
)
from rewardsql_sql_reward.verifier import DatabaseRef, SQLVerifier
from rewardsql_sql_reward.verifier.extract import STEP_TAG

Verifier = SQLVerifier | str | os.PathLike | Mapping[str, str | os.PathLike]


@dataclass(frozen=True)
class Annotation:
    """How the PRM's text is annotated: the keys of ``prm_config.json`` that say so."""

    execution_results: bool = True
    result_rows: int = RESULT_ROWS
    result_chars: int = RESULT_CHARS

    @classmethod
    def from_prm_config(cls, settings: Mapping[str, Any]) -> Annotation:
        """The annotation a trained PRM expects (its ``prm_config.json``; defaults if absent)."""
        return cls(bool(settings.get("execution_results", True)),
                   int(settings.get("result_rows", RESULT_ROWS)),
                   int(settings.get("result_chars", RESULT_CHARS)))

    def to_dict(self) -> dict[str, Any]:
        return {"execution_results": self.execution_results, "result_rows": self.result_rows,
                "result_chars": self.result_chars}


@dataclass(frozen=True)
class PRMInput:
    """One candidate as the PRM reads it.

    ``steps`` are the CoCTE steps; ``annotated_steps`` the same steps as the PRM reads them (with
    ``<result>...</result>`` when annotated); ``failed[k]`` says whether step k's SQL failed to
    execute (all False when nothing was executed).
    """

    prompt: str
    steps: list[str]
    annotated_steps: list[str]
    failed: list[bool]

    @property
    def text(self) -> str:
        """The whole PRM input as text: ``prompt step1 и step2 и ... и``."""
        return self.prompt + "".join(step + STEP_TAG for step in self.annotated_steps)


def as_steps(response: str | Sequence[str]) -> list[str]:
    """CoCTE steps of a response (split at tags, else blank lines; no separator: one step), or
    the given steps, stripped and without empty ones."""
    if isinstance(response, str):
        return split_steps(response)
    return [step.strip() for step in response if step.strip()]


def build_prm_inputs(items: Sequence[tuple[str, str | Sequence[str], DatabaseRef]],
                     verifier: Verifier | None, annotation: Annotation = Annotation(), *,
                     timeout: float | None = None) -> list[PRMInput]:
    """PRM inputs of many ``(prompt, response or steps, db_id)``; one parallel verifier call.

    With a ``verifier`` (an :class:`SQLVerifier` or a db_root) every step prefix is executed
    (cached by database and SQL) so ``failed`` is known; the results go into the text only when
    ``annotation.execution_results`` is on. Without one nothing runs and the text is plain.
    """
    steps_of = [as_steps(response) for _, response, _ in items]
    if verifier is None:
        return [PRMInput(prompt, steps, list(steps), [False] * len(steps))
                for (prompt, _, _), steps in zip(items, steps_of, strict=True)]
    runs = step_annotations_batch(
        [("".join(s + STEP_TAG for s in steps), db) for steps, (_, _, db)
         in zip(steps_of, items, strict=True)],
        verifier, limit=annotation.result_rows, max_chars=annotation.result_chars,
        timeout=timeout)
    out = []
    for (prompt, _, _), steps, (_, notes) in zip(items, steps_of, runs, strict=True):
        notes = notes[:len(steps)]
        annotated = ([f"{step}<result>{note}</result>" if note is not None else step
                      for step, note in zip(steps, notes, strict=True)]
                     if annotation.execution_results else list(steps))
        out.append(PRMInput(prompt, steps, annotated, [annotation_failed(n) for n in notes]))
    return out


def build_prm_input(prompt: str, response: str | Sequence[str], db_id: DatabaseRef,
                    verifier: Verifier | None, annotation: Annotation = Annotation(), *,
                    timeout: float | None = None) -> PRMInput:
    """:func:`build_prm_inputs` for one candidate."""
    return build_prm_inputs([(prompt, response, db_id)], verifier, annotation,
                            timeout=timeout)[0]


__all__ = ["Annotation", "PRMInput", "as_steps", "build_prm_input", "build_prm_inputs"]
