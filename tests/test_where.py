"""Where filters with operators ($ne, ranges, $in, $nin, $exists; list values), checked
against a plain-Python reading of the documented rule on random metadata and random
conditions, through every way the library applies a filter (real SQLite, FAISS, model)."""
import json
import operator
import random
import re

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import InvalidInput, TooLarge
from semsearch.validation import MAX_IN_VALUES, where_conditions

VALUES = [0, 1, 2, 2.5, -3, 10, "2", "10", "2.5", " 7", "abc", "", "2024-01-05", "2023-12-31", "true",
          True, False, None, ["a", 1], [2, "10", None], [], {"x": 1}, ["2024-02-01", True], "Ünï", "é"]
OPERANDS = [0, 1, 2, 2.5, 10, -3, "2", "10", "10.0", "abc", "2024", "2024-01", "a", "", True, False,
            None, "true", "null", "é"]
KEYS = ["n", "s", "tags"]
SIGNS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
JSON_NUMBER = re.compile(r"\s*-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?\s*")


def as_text(value) -> str:
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def as_number(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    return json.loads(value) if JSON_NUMBER.fullmatch(value) else None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def equals(stored, value) -> bool:
    """The rule: the same JSON text (a string as itself), or, for a stored number, the same number."""
    if isinstance(stored, (list, dict)):
        return False  # (the whole list's JSON text is never among OPERANDS)
    if as_text(stored) == as_text(value):
        return True
    return is_number(stored) and as_number(value) is not None and stored == as_number(value)


def compares(stored, sign, bound) -> bool:
    """Numbers and texts that spell one compare as numbers; other texts in character order
    with the bound as written; nothing else compares."""
    number = as_number(bound)
    if is_number(stored) or isinstance(stored, str) and JSON_NUMBER.fullmatch(stored):
        return number is not None and SIGNS[sign](as_number(stored), number)
    return isinstance(stored, str) and SIGNS[sign](stored, as_text(bound))


def holds(meta: dict, key: str, ops: dict) -> bool:
    def any_item(test) -> bool:  # the value, or one item of a list value
        if key not in meta:
            return False
        stored = meta[key]
        return test(stored) or isinstance(stored, list) and any(test(item) for item in stored)
    for op, operand in ops.items():
        if op == "$exists":
            ok = (key in meta) == operand
        elif op in ("$eq", "$ne"):
            ok = any_item(lambda s: equals(s, operand)) == (op == "$eq")
        elif op in ("$in", "$nin"):
            ok = any_item(lambda s: any(equals(s, v) for v in operand)) == (op == "$in")
        else:
            continue
        if not ok:
            return False
    bounds = [(op, b) for op, b in ops.items() if op in SIGNS]
    return not bounds or any_item(lambda s: all(compares(s, op, b) for op, b in bounds))


def random_condition(rng: random.Random) -> dict:
    op = rng.choice(["$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "range"])
    if op == "$exists":
        return {op: rng.random() < 0.5}
    if op in ("$in", "$nin"):
        return {op: rng.sample(OPERANDS, rng.randint(0, 3))}
    bounds = [v for v in OPERANDS if v is not None and not isinstance(v, bool)]
    if op == "range":
        return {rng.choice(["$gt", "$gte"]): rng.choice(bounds), rng.choice(["$lt", "$lte"]): rng.choice(bounds)}
    return {op: rng.choice(bounds if op in SIGNS else OPERANDS)}


@pytest.fixture(scope="module")
def coll(tmp_path_factory, model_folder):
    rng = random.Random(7)
    metas = {f"d{i:02}": {key: rng.choice(VALUES) for key in KEYS if rng.random() < 0.8} for i in range(80)}
    vectors = np.random.default_rng(7).normal(size=(len(metas), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Collection.create(tmp_path_factory.mktemp("where") / "c") as c:
        c.add_vectors(list(metas), vectors, [f"text of {key}" for key in metas], list(metas.values()))
        yield c, metas


def test_random_conditions_find_what_the_rule_says_through_documents_and_search(coll):
    c, metas = coll
    rng, tried = random.Random(11), 0
    for _ in range(150):
        where = {key: random_condition(rng) for key in rng.sample(KEYS, rng.randint(1, 2))}
        want = sorted(d for d, meta in metas.items() if all(holds(meta, k, ops) for k, ops in where.items()))
        assert [d.id for d in c.documents(where=where, text=False)] == want, where
        hits = c.search_vectors(np.eye(1, 384, dtype=np.float32), k=len(metas), where=where)[0]
        assert sorted(h.id for h in hits) == want, where
        tried += bool(want) and len(want) < len(metas)
    assert tried > 50  # most conditions split the collection, so the comparison means something


def test_a_range_compares_numbers_as_numbers_and_other_text_in_character_order(coll):
    c, _ = coll
    with Collection.create(c.path.parent / "dates") as d:
        d.add_vectors(["a", "b", "c", "e"], np.eye(4, 384, dtype=np.float32), ["a", "b", "c", "e"],
                      [{"year": 2019, "date": "2024-01-05"}, {"year": "2021", "date": "2023-12-31"},
                       {"year": 2020.5, "date": "2024-03"}, {"year": "9"}])
        found = lambda *conds: [doc.id for doc in d.documents(where=where_conditions(conds, "--where"))]
        assert found("year>=2020") == ["b", "c"]          # "9" < 2020 as a number, not as text
        assert found("year>2019", "year<=2021") == ["b", "c"]
        assert found("date>=2024") == ["a", "c"]          # ISO dates sort as text
        assert found("date<2024-02") == ["a", "b"]
        assert found("year!=2019") == ["b", "c", "e"]


def test_a_list_value_matches_when_one_of_its_items_does(coll):
    c, _ = coll
    with Collection.create(c.path.parent / "tags") as d:
        d.add_vectors(["a", "b", "c"], np.eye(3, 384, dtype=np.float32), ["a", "b", "c"],
                      [{"tags": ["red", "blue"], "n": [1, 50]}, {"tags": "red"}, {"tags": ["green"], "n": 7}])
        found = lambda where: [doc.id for doc in d.documents(where=where)]
        assert found({"tags": "red"}) == ["a", "b"]
        assert found({"tags": {"$ne": "red"}}) == ["c"]
        assert found({"tags": {"$in": ["blue", "green"]}}) == ["a", "c"]
        assert found({"n": {"$gt": 5, "$lt": 10}}) == ["c"]  # one item within all of a key's bounds
        assert found({"n": {"$gt": 40}}) == ["a"]


def test_builtin_filters_take_operators(coll, tmp_path, monkeypatch):
    c, metas = coll
    ids = sorted(metas)
    assert [d.id for d in c.documents(where={"id": {"$gte": "d70"}})] == [i for i in ids if i >= "d70"]
    assert [d.id for d in c.documents(where={"id": {"$in": ["d03", "d05", "zz"]}})] == ["d03", "d05"]
    assert len(list(c.documents(where={"id": {"$nin": ["d03"]}}))) == len(ids) - 1
    assert list(c.documents(where={"source": {"$exists": True}})) == []  # added as texts: no file
    (tmp_path / "docs").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "docs" / name).write_text(f"the file {name}")
    with Collection.create(tmp_path / "files") as f:
        f.add_files([tmp_path / "docs"])
        monkeypatch.chdir(tmp_path)  # a relative path in any operator is read from here, as --where source= is
        assert [d.source for d in f.documents(where={"source": {"$ne": "docs/a.txt"}})] == \
            [str(tmp_path / "docs" / "b.txt")]
        assert len(list(f.documents(where={"source": {"$in": ["docs/a.txt", "docs/b.txt"]}}))) == 2


def test_delete_by_a_range_deletes_exactly_the_matching_documents(coll):
    c, _ = coll
    with Collection.create(c.path.parent / "deleting") as d:
        d.add_vectors([f"x{i}" for i in range(6)], np.eye(6, 384, dtype=np.float32), list("abcdef"),
                      [{"n": i} for i in range(6)])
        assert d.delete(where={"n": {"$gte": 2, "$lt": 5}}) == 3
        assert [doc.id for doc in d.documents()] == ["x0", "x1", "x5"]
        assert d.search_vectors(np.eye(1, 384, dtype=np.float32), k=10)[0][0].id == "x0"


@pytest.mark.parametrize("where, message", [
    ({"n": {"$like": "a"}}, "unknown operator '\\$like'"),
    ({"n": {}}, "empty dict"),
    ({"n": {"$gt": True}}, "must be a string or a number"),
    ({"n": {"$lte": None}}, "must be a string or a number"),
    ({"n": {"$in": "abc"}}, "must be a list of values"),
    ({"n": {"$in": [[1]]}}, "must be a string, number or boolean"),
    ({"n": {"$exists": "yes"}}, "must be True or False"),
    ({"n": {"$eq": float("nan")}}, "which no stored value equals"),
    ({"nope": {"$ne": 1}}, "unknown metadata key 'nope'"),
])
def test_a_malformed_condition_is_one_clear_error(coll, where, message):
    with pytest.raises(InvalidInput, match=message):
        list(coll[0].documents(where=where))


def test_limits_on_conditions_and_in_values(coll):
    c, _ = coll
    with pytest.raises(TooLarge, match="values; the limit is"):
        c.search_vectors(np.eye(1, 384, dtype=np.float32), where={"n": {"$in": list(range(MAX_IN_VALUES + 1))}})
    with pytest.raises(TooLarge, match="conditions; the limit is 100"):
        c.documents(where={f"k{i}": {"$gt": 1, "$lt": 2} for i in range(51)})
    assert list(c.documents(where={"n": {"$in": [str(i) for i in range(MAX_IN_VALUES)]}}, limit=1))


@pytest.mark.parametrize("given, parsed", [
    (["team=ops"], {"team": "ops"}),
    (["year>=2020", "year<2024"], {"year": {"$gte": "2020", "$lt": "2024"}}),
    (["a!=b=c"], {"a": {"$ne": "b=c"}}),
    (["x==1"], {"x": "1"}),
    (["t>"], {"t": {"$gt": ""}}),
    (['{"team": {"$in": ["a", "b"]}, "n": 3}'], {"team": {"$in": ["a", "b"]}, "n": 3}),
    (['{"n": {"$gt": 1}}', "n<5"], {"n": {"$gt": 1, "$lt": "5"}}),
])
def test_where_strings_parse_to_conditions(given, parsed):
    assert where_conditions(given, "--where") == parsed


@pytest.mark.parametrize("given, message", [
    (["team"], "expects KEY=VALUE"),
    (["<=3"], "expects KEY=VALUE"),
    (["n>1", "n>2"], "gives 'n' \\$gt twice"),
    (["t=a", '{"t": "b"}'], "gives 't' \\$eq twice.*\\$in"),
    (["{nope"], "not a valid JSON object"),
])
def test_where_strings_that_say_nothing_clear_are_refused(given, message):
    with pytest.raises(InvalidInput, match=message):
        where_conditions(given, "--where")


def test_the_command_line_filters_with_operators_and_refuses_in_one_line(coll, tmp_path):
    c, metas = coll
    runner = CliRunner()
    out = runner.invoke(cli, ["documents", str(c.path), "--where", "id>=d75", "--where", "id<d78", "--json"])
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["id"] for line in out.output.splitlines()] == ["d75", "d76", "d77"]
    out = runner.invoke(cli, ["search", str(c.path), "text", "--where", "n>1", "--where", "n>2"])
    assert out.exit_code == 2 and out.output.startswith("error: --where gives 'n' $gt twice")
    assert len(out.output.strip().splitlines()) == 1


def test_a_filter_repeated_after_writes_sees_each_write(coll):
    c, _ = coll
    with Collection.create(c.path.parent / "cached") as d:
        one = lambda: np.eye(1, 384, dtype=np.float32)
        found = lambda: sorted(h.id for h in d.search_vectors(one(), k=10, where={"team": "a"})[0])
        d.add_vectors(["x", "y"], np.eye(2, 384, dtype=np.float32), ["x", "y"], [{"team": "a"}, {"team": "b"}])
        assert found() == ["x"]
        d.add_vectors(["z"], one(), ["z"], [{"team": "a"}])
        assert found() == ["x", "z"]
        d.add_vectors(["x"], one(), ["x"], [{"team": "b"}])  # x replaced: no longer team a
        assert found() == ["z"]
        d.delete("z")
        assert found() == []
        assert [h.id for h in d.search("x", k=5, mode="lexical", where={"team": "b"})] == ["x"]


def test_a_filter_sent_with_every_search_is_matched_once_per_write(coll, monkeypatch):
    c, _ = coll
    with Collection.create(c.path.parent / "counted") as d:
        d.add_vectors(["x", "y"], np.eye(2, 384, dtype=np.float32), ["x", "y"], [{"team": "a"}, {"team": "b"}])
        matched = []
        real = d.store.filter_ids
        monkeypatch.setattr(d.store, "filter_ids", lambda where: matched.append(where) or real(where))
        for _ in range(3):
            assert d.search_vectors(np.eye(1, 384, dtype=np.float32), where={"team": "a"})[0][0].id == "x"
            assert d.similar("y", where={"team": {"$in": ["a"]}})[0].id == "x"
        assert len(matched) == 2
        d.add_vectors(["w"], np.eye(1, 384, dtype=np.float32), ["w"], [{"team": "a"}])
        assert len(d.search_vectors(np.eye(1, 384, dtype=np.float32), where={"team": "a"})[0]) == 2
        assert len(matched) == 3


def test_info_names_the_metadata_keys_a_filter_may_use(coll):
    c, _ = coll
    assert c.info()["metadata_keys"] == sorted(KEYS)
    out = CliRunner().invoke(cli, ["info", str(c.path)])
    assert out.exit_code == 0 and "  metadata:  n, s, tags" in out.output
