"""Token ids of step-tagged text for the process reward model (PRM).

The PRM reads ``prompt step1 TAG step2 TAG ... stepK TAG`` and predicts one of two candidate
tokens ("+" good step, "-" bad step) at every TAG. The ids are built by concatenating segments:
the prompt's ids, then each step's ids followed by the tag's id. Tokenizing one joined string
instead lets BPE merge the tag with its neighbours (``"\\n" + "\\n"`` is one token), so the tag
would move or vanish. Tag positions are the places where a step's tag was appended, so they are
after the prompt only: a tag token the prompt (or a step's own text, e.g. a string literal)
happens to contain is not a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewardsql.errors import ConfigError

#: The published step tag (space, Cyrillic small letter i, space) and candidate tokens.
DEFAULT_TAG = " и "
DEFAULT_CANDIDATES = ("+", "-")


@dataclass(frozen=True)
class TagTokens:
    """The ids the PRM needs: the step tag's and the two candidates' ("+" first, then "-")."""

    tag_id: int
    good_id: int
    bad_id: int


def single_token(tokenizer: Any, text: str, what: str) -> int:
    """The one id ``text`` encodes to; a ConfigError naming ``what`` when it is not one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ConfigError(f"{text!r} must encode to exactly one token of this tokenizer, got "
                          f"{len(ids)}: {pieces}", key=what)
    return int(ids[0])


def tag_tokens(tokenizer: Any, tag: str = DEFAULT_TAG,
               candidates: Sequence[str] = DEFAULT_CANDIDATES) -> TagTokens:
    """Derive the tag and candidate ids from ``tokenizer`` (never hard-code them).

    Raises ConfigError when the tag or a candidate is not exactly one token, or when the
    candidates are not two distinct tokens different from the tag.
    """
    if len(candidates) != 2:
        raise ConfigError(f"expected two candidate tokens (good, bad), got {list(candidates)!r}",
                          key="candidate_tokens")
    tag_id = single_token(tokenizer, tag, "step_tag")
    good = single_token(tokenizer, candidates[0], "candidate_tokens")
    bad = single_token(tokenizer, candidates[1], "candidate_tokens")
    if len({tag_id, good, bad}) != 3:
        raise ConfigError(f"the tag {tag!r} and the candidates {list(candidates)!r} must be three "
                          "different tokens", key="candidate_tokens")
    return TagTokens(tag_id, good, bad)


def split_tagged(text: str, tag: str = DEFAULT_TAG) -> list[str]:
    """The steps of step-tagged text: split at ``tag``; text without any tag is one step.

    A trailing tag closes the last step (it does not start an empty one); empty steps are
    dropped.
    """
    return [piece for piece in text.split(tag) if piece.strip()]


@dataclass(frozen=True)
class Encoded:
    """One PRM input: its ids, where its tags are, and how many ids are the prompt's."""

    input_ids: list[int]
    tag_positions: list[int]
    prompt_length: int


def encode(tokenizer: Any, prompt: str, steps: Sequence[str], tag_id: int, *,
           max_length: int | None = None) -> Encoded:
    """Ids of ``prompt`` followed by each step and the tag, built segment by segment.

    ``max_length`` drops whole trailing steps that do not fit (a step is scored only with its
    tag). Tag positions are where the tags were appended, after the prompt.
    """
    ids = list(tokenizer.encode(prompt, add_special_tokens=False)) if prompt else []
    prompt_length = len(ids)
    positions: list[int] = []
    for step in steps:
        piece = [*tokenizer.encode(step, add_special_tokens=False), tag_id]
        if max_length is not None and len(ids) + len(piece) > max_length:
            break
        ids.extend(piece)
        positions.append(len(ids) - 1)
    return Encoded(ids, positions, prompt_length)


def targets_for(labels: Sequence[str | float], candidates: Sequence[str] = DEFAULT_CANDIDATES,
                *, soft: bool = False, where: str = "labels") -> list[float]:
    """Training targets (probability of the good candidate) from hard or soft labels.

    Hard labels are the candidate strings (``"+"``/``"-"``) or booleans; soft labels are numbers
    in [0, 1]. ``where`` names the example in the error.
    """
    out: list[float] = []
    for label in labels:
        if soft:
            if isinstance(label, bool) or not isinstance(label, (int, float)) \
                    or not 0 <= label <= 1:
                raise ConfigError(f"{where}: expected soft labels in [0, 1], got {label!r}")
            out.append(float(label))
        elif label in (candidates[0], True):
            out.append(1.0)
        elif label in (candidates[1], False):
            out.append(0.0)
        else:
            raise ConfigError(f"{where}: expected hard labels {candidates[0]!r} or "
                              f"{candidates[1]!r}, got {label!r}")
    return out


__all__ = ["DEFAULT_CANDIDATES", "DEFAULT_TAG", "Encoded", "TagTokens", "encode", "single_token",
           "split_tagged", "tag_tokens", "targets_for"]
