"""Lexical helpers: find things in SQL text outside string literals, quoted names, comments."""

from __future__ import annotations

import re

_LITERAL = re.compile(
    r"""'(?:[^']|'')*(?:'|\Z)"""  # 'string' ('' escapes a quote); unterminated runs to the end
    r'''|"(?:[^"]|"")*(?:"|\Z)'''  # "identifier"
    r"|`[^`]*(?:`|\Z)"  # `identifier`
    r"|\[[^\]]*(?:\]|\Z)"  # [identifier]
    r"|--[^\n]*"  # line comment
    r"|/\*.*?(?:\*/|\Z)",  # block comment
    re.S,
)


def _mask_one(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith(("--", "/*")):
        return " " * len(text)
    # keep the opening quote so the masked text still shows a token; hide the content
    return text[0] + "_" * (len(text) - 1)


def mask(sql: str) -> str:
    """``sql`` with the inside of literals, quoted names and comments hidden; same length."""
    return _LITERAL.sub(_mask_one, sql)


_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.I)


def has_top_level_order_by(sql: str) -> bool:
    """Whether the statement's outermost SELECT sorts its result (ORDER BY outside parentheses)."""
    masked = mask(sql)
    depth = 0
    depths = []
    for char in masked:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        depths.append(depth)
    return any(depths[m.start()] <= 0 for m in _ORDER_BY.finditer(masked))


def first_semicolon(sql: str) -> int:
    """Index of the first ``;`` outside literals and comments, or -1."""
    return mask(sql).find(";")


def split_outside_literals(sql: str, separator: re.Pattern[str]) -> list[str]:
    """Split ``sql`` at matches of ``separator`` that lie outside literals and comments."""
    masked = mask(sql)
    pieces = []
    start = 0
    for match in separator.finditer(masked):
        pieces.append(sql[start:match.start()])
        start = match.end()
    pieces.append(sql[start:])
    return pieces
