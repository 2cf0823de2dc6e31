"""extract_sql and CoCTE step splitting on messy, realistic model outputs."""

from __future__ import annotations

import pytest
from rewardsql_sql_reward import STEP_TAG, extract_sql, split_steps
from rewardsql_sql_reward.rewards.cocte import to_tagged

GOLD = "SELECT name FROM singer WHERE age > 30"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (GOLD, GOLD),
        (GOLD + ";", GOLD),
        (f"```sql\n{GOLD};\n```", GOLD),
        (f"```SQL\n{GOLD}\n```\nThis returns the singers older than 30.", GOLD),
        (f"Here is the query:\n```\n{GOLD}\n```", GOLD),
        # the last sql block wins over an earlier draft and over a non-sql block
        (f"```sql\nSELECT 1\n```\nBetter:\n```sql\n{GOLD}\n```\n```text\nnote\n```", GOLD),
        (f"{GOLD};<|im_end|>\n<|im_start|>user\nSELECT * FROM hack", GOLD),
        (f"<|im_start|>assistant\n{GOLD}<|endoftext|>", GOLD),
        (f"<think>First SELECT the table... maybe WITH a CTE?</think>\n{GOLD}", GOLD),
        (f"The answer is: {GOLD}; It lists names.", GOLD),
        (f"To answer this, query the singer table.\n\n{GOLD}\n\nThis lists the names.", GOLD),
        (f"SQL:\n{GOLD}\n-- done", GOLD),
        (f"```sql\n{GOLD}", GOLD),  # truncated: the fence never closes
        ("select name from singer where age > 30", "select name from singer where age > 30"),
        (f"{GOLD}; DROP TABLE singer;", GOLD),  # only the first statement
        ("SELECT 'a;b' FROM singer; trailing", "SELECT 'a;b' FROM singer"),
        ("I cannot answer that.", "I cannot answer that."),
        ("", ""),
    ],
)
def test_extract_sql(response: str, expected: str) -> None:
    assert extract_sql(response) == expected


def test_cocte_steps_are_joined_without_tags() -> None:
    response = (
        "WITH big AS (SELECT singer_id FROM concert WHERE year > 2019) и \n"
        "per AS (SELECT singer_id, COUNT(*) AS n FROM big GROUP BY singer_id) и \n"
        "SELECT s.name FROM singer s JOIN per p ON s.id = p.singer_id; и <|im_end|>"
    )
    assert extract_sql(response) == (
        "WITH big AS (SELECT singer_id FROM concert WHERE year > 2019),\n"
        "per AS (SELECT singer_id, COUNT(*) AS n FROM big GROUP BY singer_id)\n"
        "SELECT s.name FROM singer s JOIN per p ON s.id = p.singer_id"
    )


def test_blank_line_steps_get_their_missing_commas() -> None:
    response = ("WITH a AS (SELECT id FROM singer)\n\nb AS (SELECT id FROM a WHERE id > 2)\n\n"
                "SELECT count(*) FROM b")
    assert extract_sql(response) == ("WITH a AS (SELECT id FROM singer),\n"
                                     "b AS (SELECT id FROM a WHERE id > 2)\nSELECT count(*) FROM b")


def test_stray_comma_before_final_select_is_removed() -> None:
    response = "WITH a AS (SELECT id FROM singer), и SELECT count(*) FROM a и "
    assert extract_sql(response) == "WITH a AS (SELECT id FROM singer)\nSELECT count(*) FROM a"


def test_tag_inside_a_string_literal_does_not_split() -> None:
    response = "SELECT name FROM singer WHERE name = 'Ana и Bo'"
    assert extract_sql(response) == response
    assert split_steps(response) == [response]


def test_split_steps_by_tag_and_by_blank_lines_agree() -> None:
    steps = ["WITH a AS (SELECT id FROM singer),", "b AS (SELECT id FROM a)", "SELECT * FROM b;"]
    tagged = "".join(s + STEP_TAG for s in steps)
    assert split_steps(tagged) == steps
    assert split_steps("\n\n".join(steps)) == steps
    assert split_steps(f"```sql\n{tagged}\n```<|im_end|>") == steps
    assert to_tagged("\n\n".join(steps)) == tagged


def test_tag_at_line_end_without_trailing_space_still_splits() -> None:
    assert split_steps("WITH a AS (SELECT 1 AS x) и\nSELECT x FROM a и") == [
        "WITH a AS (SELECT 1 AS x)", "SELECT x FROM a"]


@pytest.mark.parametrize("tag", ["SQL", "Sql", "SQLite", "SQLITE"])
def test_the_fence_tag_matches_in_any_case_with_two_blocks(tag: str) -> None:
    """With one block the last-block fallback hides the tag's case; with the result shown in a
    second, later block, only the tag tells which block holds the SQL."""
    response = f"```{tag}\n{GOLD}\n```\nIt returns:\n```text\nname\nBo\n```"
    assert extract_sql(response) == GOLD
    # an earlier lower-case draft does not beat the later upper-case block either
    assert extract_sql(f"```sql\nSELECT 1\n```\n{response}") == GOLD
