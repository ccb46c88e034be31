import pytest

from pipeline.efficiency import flops, folder_bytes, mean_postings, term_fractions


def test_flops_hand_computed():
    docs = [{"a": 3, "b": 1}, {"a": 2}, {"c": 5}, {"a": 1, "c": 1}]
    queries = [{"a": 10}, {"a": 4, "c": 2}]
    # p_d: a 3/4, b 1/4, c 2/4; p_q: a 2/2, c 1/2  ->  1 * 3/4 + 1/2 * 2/4
    assert flops(docs, queries) == pytest.approx(0.75 + 0.25)
    assert term_fractions(queries) == ({"a": 1.0, "c": 0.5}, 2)


def test_postings_ignore_zero_weights(tmp_path):
    assert mean_postings([{"a": 1, "b": 0}, {"a": 2, "b": 2, "c": 1}]) == 2.0
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"12345")
    assert folder_bytes(tmp_path) == 5
