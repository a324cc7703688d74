import pandas as pd

from recbole_mm.data.atomic_files import chronological_sequences


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_chronological_sequences_order_and_indices():
    inter = frame([("b", "x", 5), ("a", "y", 1), ("a", "x", 3), ("b", "z", 2), ("a", "z", 3)])
    sequences, users, items = chronological_sequences(inter)
    # global time order: a-y@1, b-z@2, a-x@3, a-z@3 (tie: item x before z), b-x@5
    assert users == ["a", "b"] and items == ["y", "z", "x"]
    assert sequences == [[0, 2, 1], [1, 2]]


def test_chronological_sequences_numeric_ids_break_ties_numerically():
    inter = frame([(10, 2, 1), (9, 10, 1), (10, 9, 1)])
    sequences, users, items = chronological_sequences(inter)
    # all at time 1: (user 9, item 10), (user 10, item 2), (user 10, item 9) -- numeric order, not "10" < "9"
    assert users == [9, 10] and items == [10, 2, 9]
    assert sequences == [[0], [1, 2]]
