"""Fuzzing workflow files: 240 mutants of the shipped workflows through `run_workflow.py --validate`.

Truncations, character flips, and edits of the structure (a node without its type, inputs that are not an
object, links to nowhere, duplicated ids, values of the wrong type). Each must be refused with one line
naming the file (exit 2) or pass validation (exit 0): never a traceback.
"""

from __future__ import annotations

import copy
import importlib
import json
import random

import pytest
from conftest import REPO
from test_nodes import pack  # noqa: F401  (the pack imported as ComfyUI does, with faithful stand-ins)

SOURCES = sorted((REPO / "workflows").glob("*.json"))
CASES_PER_SOURCE = 24


def _edit_structure(data, rng: random.Random):
    data = copy.deepcopy(data)
    if "nodes" in data:  # UI format
        node = rng.choice(data["nodes"])
        edit = rng.randrange(6)
        if edit == 0:
            node.pop(rng.choice(["type", "id", "inputs", "widgets_values"]), None)
        elif edit == 1:
            node["inputs"] = rng.choice([{}, "x", 7, [None]])
        elif edit == 2 and data["links"]:
            rng.choice(data["links"])[1] = rng.choice([9999, -1, "a"])
        elif edit == 3:
            data["nodes"].append(copy.deepcopy(node))  # a duplicated id
        elif edit == 4 and node.get("widgets_values"):
            values = node["widgets_values"]
            values[rng.randrange(len(values))] = rng.choice([None, "", -10**9, [1], {"a": 1}, 1e309])
        else:
            data[rng.choice(["nodes", "links"])] = rng.choice([{}, "x", None])
        return data
    key = rng.choice(list(data))
    entry = data[key]
    edit = rng.randrange(4)
    if edit == 0:
        entry.pop(rng.choice(["class_type", "inputs"]))
    elif edit == 1 and entry["inputs"]:
        name = rng.choice(list(entry["inputs"]))
        entry["inputs"][name] = rng.choice([None, ["9999", 0], ["1", 99], [1, 2, 3], {"x": 1}, -5, "nonsense"])
    elif edit == 2:
        data[key] = rng.choice([[], "node", 3])
    else:
        entry["class_type"] = rng.choice(["", "NoSuchNode", 5])
    return data


def _mutant(text: str, rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        return text.encode()[: rng.randrange(len(text))]
    if kind == 1:
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice('{}[]":,0a\x00é')
        return "".join(chars).encode()
    return json.dumps(_edit_structure(json.loads(text), rng)).encode()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_mutated_workflows_are_refused_in_one_line(pack, tmp_path, capsys, source):  # noqa: F811
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    rng = random.Random(source.name)
    text = source.read_text(encoding="utf-8")
    codes = {0: 0, 2: 0}
    for i in range(CASES_PER_SOURCE):
        path = tmp_path / f"mutant_{i}.json"
        path.write_bytes(_mutant(text, rng))
        code = runner.main([str(path), "--validate", "--input", str(tmp_path), "--output", str(tmp_path)])
        err = capsys.readouterr().err
        assert code in codes, (code, err)
        codes[code] += 1
        if code:
            assert err.count("\n") == 1 and path.name in err, err
    assert codes[2] >= CASES_PER_SOURCE // 2, codes


def test_a_list_binary_data_and_a_missing_file_are_named(pack, tmp_path, capsys):  # noqa: F811
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    cases = {"list.json": (b"[1, 2, 3]", "holds a JSON list"), "binary.json": (bytes(range(256)), "binary data"),
             "cut.json": (b'{"nodes": [', "not valid JSON"), "api.json": (b'{"1": {"inputs": {}}}', "'class_type'")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert runner.main([str(tmp_path / name), "--validate"]) == 2
        err = capsys.readouterr().err
        assert message in err and name in err, err
    assert runner.main([str(tmp_path / "missing.json")]) == 2
    assert "no workflow file at" in capsys.readouterr().err
