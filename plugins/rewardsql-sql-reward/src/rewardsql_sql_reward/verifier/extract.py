"""Getting the executable SQL out of a model response.

Rules, applied in order (the README repeats them):

1. Text from the first chat end token on is dropped (``<|im_end|>``, ``<|endoftext|>``,
   ``<|eot_id|>``, ``<|end|>``, ``</s>``, ``<end_of_turn>``, ``<｜end▁of▁sentence｜>``).
2. A reasoning block is dropped: everything up to the last ``</think>``.
3. Other chat special tokens (``<|im_start|>`` ...) are removed.
4. If the text has fenced code blocks, the last block tagged ``sql``/``sqlite`` is used, else the
   last block; an unclosed fence at the end (a truncated answer) runs to the end.
5. CoCTE step tags are removed (outside string literals) and the steps joined by newlines; a
   missing comma between two CTE definitions is added, a stray comma before the final SELECT
   is removed.
6. The SQL starts at the first line that starts with ``SELECT`` or ``WITH <name> AS (``, else at
   the first upper-case ``SELECT``/``WITH`` anywhere.
7. It ends at the first ``;`` outside literals and comments; without one, trailing paragraphs
   of prose (after a blank line, not starting like SQL) are dropped.
8. Surrounding whitespace, trailing comments and the final ``;`` are stripped. No SQL found:
   the cleaned text.
"""

from __future__ import annotations

import re

from rewardsql_sql_reward.verifier.sqltext import first_semicolon, mask, split_outside_literals

#: The step separator of the published work: space, Cyrillic small letter i, space.
STEP_TAG = " и "
#: The tag as found in text: also accepted at the end of a line or of the text, where decoding
#: may have dropped its trailing space.
TAG_PATTERN = re.compile(r" и(?: |(?=\r?\n)|\Z)")

END_TOKENS: tuple[str, ...] = (
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<|eom_id|>", "<|end_of_text|>",
    "</s>", "<end_of_turn>", "<｜end▁of▁sentence｜>",
)
_END = re.compile("|".join(re.escape(t) for t in END_TOKENS))
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n?(.*?)(?:```|\Z)", re.S)

#: ``name AS (`` (optionally with a column list, [NOT] MATERIALIZED): a CTE definition.
CTE_DEF = re.compile(
    r"""^\s*(?:WITH\s+(?:RECURSIVE\s+)?)?([A-Za-z_][\w$]*|"[^"]+"|`[^`]+`|\[[^\]]+\])\s*"""
    r"""(?:\([^()]*\)\s*)?AS\s+(?:NOT\s+)?(?:MATERIALIZED\s+)?\(""",
    re.I,
)
_STARTS_WITH_WITH = re.compile(r"^\s*WITH\b", re.I)
_STARTS_WITH_SELECT = re.compile(r"^\s*SELECT\b", re.I)
_LINE_START = re.compile(
    r"^[ \t]*(?:SELECT\b|WITH\s+(?:RECURSIVE\s+)?[\w\"`\[]+[^\n]*?\bAS\s*(?:NOT\s+)?"
    r"(?:MATERIALIZED\s*)?\()",
    re.I | re.M,
)
_ANYWHERE = re.compile(r"\b(?:SELECT|WITH)\b")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SQL_WORDS = frozenset(
    re.findall(
        r"\w+",
        "select from where join inner left right full outer cross natural on using group order by "
        "having limit offset union intersect except all distinct and or not in exists case when "
        "then else end as with recursive values window over partition asc desc is null like "
        "between collate cast",
    )
)


def clean_response(response: str) -> str:
    """Rules 1-4: the answer text without chat tokens, reasoning and code fences."""
    text = response
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    think = text.rfind("</think>")
    if think != -1:
        text = text[think + len("</think>"):]
    text = _SPECIAL.sub("", text)
    blocks = _FENCE.findall(text)
    if blocks:
        sql_blocks = [body for lang, body in blocks if lang.lower() in ("sql", "sqlite")]
        text = (sql_blocks or [body for _, body in blocks])[-1]
    return text


def join_steps(steps: list[str]) -> str:
    """Join CoCTE steps into one statement, repairing the comma between CTE definitions."""
    out: list[str] = []
    for step in steps:
        piece = step.strip()
        if not piece:
            continue
        if out:
            previous = out[-1].rstrip()
            if CTE_DEF.match(piece) and not _STARTS_WITH_WITH.match(piece):
                if not previous.endswith(","):
                    out[-1] = previous + ","
            elif _STARTS_WITH_SELECT.match(piece) and previous.endswith(","):
                out[-1] = previous[:-1]
        out.append(piece)
    return "\n".join(out)


def _is_prose(paragraph: str) -> bool:
    if CTE_DEF.match(paragraph) or paragraph[:1] in "(),":
        return False
    first = re.match(r"[A-Za-z_]+", paragraph)
    if first is None:  # a comment, a number, a quoted name: SQL; anything else: prose
        return paragraph[:1] not in "-/0123456789'\"`["

    return first.group(0).lower() not in _SQL_WORDS


def _drop_trailing_prose(sql: str) -> str:
    paragraphs = _PARAGRAPH.split(sql)
    kept = [paragraphs[0]]
    for paragraph in paragraphs[1:]:
        if _is_prose(paragraph):
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def extract_sql(response: str) -> str:
    """The executable SQL in a model response (rules in this module's docstring)."""
    text = clean_response(response)
    tagged = TAG_PATTERN.search(text) is not None
    if tagged:
        text = join_steps(split_outside_literals(text, TAG_PATTERN))
    start = _LINE_START.search(text) or _ANYWHERE.search(text)
    if start is None:
        return text.strip().rstrip(";").strip()
    text = text[start.start():]
    semicolon = first_semicolon(text)
    text = text[:semicolon] if semicolon != -1 else _drop_trailing_prose(text)
    text = text[: len(mask(text).rstrip())]  # trailing comments go too
    if not tagged:  # blank-line steps: repair commas the same way
        steps = split_outside_literals(text, _PARAGRAPH)
        if len(steps) > 1 and any(CTE_DEF.match(s) for s in steps[1:]):
            text = join_steps(steps)
    return text.strip()
