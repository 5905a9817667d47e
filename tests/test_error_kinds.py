"""Sorting sql answers into kinds (minilora.paper.error_kinds)."""

from minilora.paper.error_kinds import KINDS, kind, skeleton

GOLD = "SELECT country FROM cities WHERE name = 'tokyo'"


def test_a_skeleton_hides_strings_and_numbers_only():
    assert skeleton(GOLD) == "SELECT country FROM cities WHERE name = 'S'"
    assert skeleton("SELECT name FROM products WHERE stock < 458 ") == (
        "SELECT name FROM products WHERE stock < N"
    )
    assert (
        skeleton("SELECT AVG(price) FROM t WHERE x > 3.5") == "SELECT AVG(price) FROM t WHERE x > N"
    )


def test_each_answer_has_one_kind():
    assert kind(GOLD + " ", GOLD) == "right"  # the score strips, so does the kind
    assert kind(GOLD.replace("tokyo", "milan"), GOLD) == "a value wrong"
    assert (
        kind(
            "SELECT name FROM products WHERE stock < 466",
            "SELECT name FROM products WHERE stock < 458",
        )
        == "a value wrong"
    )
    assert kind(GOLD.replace("country", "population"), GOLD) == "structure wrong"  # a column
    assert kind(GOLD.replace("cities", "towns"), GOLD) == "structure wrong"  # a table
    assert kind("SELECT price FROM products WHERE name = 'x'", "SELECT price FROM products") == (
        "structure wrong"  # a clause too many, whatever its value
    )
    assert kind("", GOLD) == "structure wrong"
    assert {kind(a, GOLD) for a in (GOLD, GOLD[:-3] + "x'", "")} == set(KINDS)
