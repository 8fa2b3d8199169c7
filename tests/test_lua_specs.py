"""Every Redis script has one spec (factorize_app/jobs/scripts.py): its header names the same
KEYS and ARGV in the same order, its body reads them by name only, and no script types a field
name, a status word, a key prefix or a constant that Python defines (it names them: `JOB.outcome`)."""

from __future__ import annotations

import json
import re

import pytest
import redis

from factorize_app.jobs import scripts
from factorize_app.jobs.scripts import HELPERS, SCRIPTS, Script, header, vocabulary

LUA_FILES = sorted(scripts.HERE.glob("*.lua"))


def body(name: str) -> str:
    return (scripts.HERE / f"{name}.lua").read_text()


def test_every_lua_file_is_a_script_with_a_spec_or_a_helper():
    names = {path.stem for path in LUA_FILES}
    assert names == set(SCRIPTS) | set(HELPERS)
    assert not set(SCRIPTS) & set(HELPERS)
    for spec in SCRIPTS.values():
        assert set(spec.helpers) <= set(HELPERS), spec.name


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_header_names_its_spec_keys_and_arguments_in_order(name):
    assert header(scripts.HERE / f"{name}.lua") == (SCRIPTS[name].keys, SCRIPTS[name].args)


@pytest.mark.parametrize("name", HELPERS)
def test_helpers_have_no_header_and_define_their_function(name):
    assert header(scripts.HERE / f"{name}.lua") is None
    assert re.search(rf"^local function {name}\(", body(name), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_read_keys_and_arguments_by_name_only(name):
    spec, source = SCRIPTS[name], body(name)
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    assert not re.search(r"\b(KEYS|ARGV)\b", code), "positional access: name it in the spec"
    for table, items in (("K", spec.keys), ("A", spec.args)):
        for item in items:
            used = rf"\b{table}\.{item.name}\b" if item.fixed else rf"\b{item.name}\b"
            assert re.search(used, code), f"{item.name} is declared but never read"
        assert set(re.findall(rf"\b{table}\.(\w+)", code)) <= {item.name for item in items if item.fixed}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_builds_with_every_name_resolved_and_redis_compiles_it(redis_conn: redis.Redis, name):
    source = SCRIPTS[name].source
    names = "|".join(["K", "A", *(table for table, words in vocabulary().items() if isinstance(words, dict))])
    assert not re.findall(rf"(?<![\w.])({names})\.\w+", source)
    assert redis_conn.script_load(source) == redis_conn.script_load(source)  # SCRIPT LOAD compiles it


def test_no_script_types_a_word_python_defines():
    words = set()
    for value in vocabulary().values():
        words |= set(value.values()) if isinstance(value, dict) else {str(value)}
    for path in LUA_FILES:
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        literals = set(re.findall(r"'([^']*)'", code)) | set(re.findall(r'"([^"]*)"', code))
        assert not literals & words, f"{path.name} types {sorted(literals & words)}: name it (scripts.vocabulary)"


def test_a_call_builds_the_positional_lists_in_the_header_order():
    spec = Script("settle", keys="waiting used running holders", args="prefix worker #accounts[client n] rest[id]")
    keys, args = spec.build(
        {
            "waiting": "w", "used": "u", "running": "r", "holders": "h", "prefix": "p", "worker": "me",
            "accounts": [{"client": "a", "n": 1}, {"client": "b", "n": 2}], "rest": [{"id": "x"}],
        }
    )  # fmt: skip
    assert (keys, args) == (["w", "u", "r", "h"], ["p", "me", 2, "a", 1, "b", 2, "x"])
    with pytest.raises(TypeError, match="missing"):
        spec.build({"waiting": "w"})


@pytest.mark.parametrize(
    ("keys", "args"),
    [("a a", ""), ("a", "a"), ("rows[x] b", ""), ("ids* rows[x]", ""), ("b? a", ""), ("g[x]", "#g[y]")]
    + [("g[x]", "g[x]"), ("g[#x y]", "")],
)
def test_a_spec_that_could_be_read_two_ways_is_refused(keys, args):
    with pytest.raises(ValueError):
        Script("ambiguous", keys=keys, args=args)


@pytest.mark.parametrize(
    ("keys", "args", "values"),
    [
        ("a b?", "x ids*", {"a": "k1", "x": "1", "ids": ["i", "j"]}),
        ("a b?", "x", {"a": "k1", "b": "k2", "x": "1"}),
        ("a jobs[k1 k2]", "n jobs[v1]", {"a": "A", "n": "N", "jobs": [{"k1": "1", "k2": "2", "v1": "3"}] * 2}),
        ("", "first rows[id #entry]", {"first": "f",
            "rows": [{"id": "1", "entry": ["a", "b"]}, {"id": "2", "entry": ["c"]}]}),
        ("", "#pairs[a b] tail[c]", {"pairs": [{"a": "1", "b": "2"}], "tail": [{"c": "3"}, {"c": "4"}]}),
    ],
)
def test_a_script_reads_by_name_what_the_call_passed_by_name(redis_conn: redis.Redis, keys, args, values):
    """The script as built, run in Redis, reads each name as the value the call gave for it."""
    spec = Script("probe", keys=keys, args=args)
    items = {item.name: (table, item) for table, items in (("K", spec.keys), ("A", spec.args)) for item in items}
    answers = []
    for name, (table, item) in items.items():
        if item.fixed:
            answers.append(f"{table}.{name} or false")
        else:  # a list, or groups as JSON
            encode = f"for _, v in ipairs({name}) do out[#out + 1] = cjson.encode(v) end"
            answers.append(f"(function() local out = {{}} {encode} return out end)()")
    script_keys, script_args = spec.build(values)
    source = spec.lua(f"return {{{', '.join(answers)}}}")
    reply = redis_conn.eval(source, len(script_keys), *script_keys, *script_args)
    for (name, (_, item)), got in zip(items.items(), reply, strict=True):
        if item.fixed:
            assert (got.decode() if got else None) == values.get(name)
        else:
            assert [json.loads(value) for value in got] == values[name]
