"""Reading a workflow file: whatever is in it, a clear error or a well-formed UI / API workflow.

A truncated download, a file that is not JSON, a JSON list, a UI workflow
whose nodes lack ids or types, an API prompt whose entries lack
`class_type` / `inputs`: each is refused here with the file's name and what
is wrong, before the node definitions are consulted (workflow.py, runner.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...uniworld_core import InputError

EXPECTED = "a ComfyUI workflow (UI format with 'nodes' and 'links', or API format {id: {class_type, inputs}})"


def read_workflow(path: str | Path) -> dict:
    """The parsed, structurally checked workflow of a file (UI or API format)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no workflow file at '{path}'", "an existing .json file", "Check the path.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path.name}', which is binary data, not text", EXPECTED) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"'{path.name}', which is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})", EXPECTED, "The file may be truncated or edited by hand; save it again "
                         "from ComfyUI.") from exc
    if not isinstance(data, dict):
        raise InputError(f"'{path.name}', which holds a JSON {type(data).__name__}", EXPECTED)
    _check_ui(path, data) if "nodes" in data else _check_api(path, data)
    return data


def _check_ui(path: Path, data: dict) -> None:
    nodes, links = data.get("nodes"), data.get("links", [])
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise InputError(f"'{path.name}' with 'nodes' or 'links' that are not lists", EXPECTED)
    ids = set()
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), int) or not isinstance(node.get("type"), str):
            raise InputError(f"'{path.name}': node #{index} without an integer 'id' and a 'type'", EXPECTED)
        if node["id"] in ids:
            raise InputError(f"'{path.name}': two nodes with the id {node['id']}", "unique node ids")
        ids.add(node["id"])
        for key, kind in (("inputs", list), ("outputs", list), ("widgets_values", (list, dict))):
            if key in node and node[key] is not None and not isinstance(node[key], kind):
                raise InputError(f"'{path.name}': node {node['id']} with '{key}' of type "
                                 f"{type(node[key]).__name__}", EXPECTED)
        for slot in node.get("inputs") or []:
            if not isinstance(slot, dict) or not isinstance(slot.get("name"), str):
                raise InputError(f"'{path.name}': node {node['id']} with an input slot without a name", EXPECTED)
    for link in links:
        ok = (isinstance(link, list) and len(link) >= 5 and all(isinstance(v, int) for v in link[:5])) or (
            isinstance(link, dict) and all(isinstance(link.get(k), int) for k in ("id", "origin_id", "origin_slot")))
        if not ok:
            raise InputError(f"'{path.name}': a malformed link {str(link)[:60]}", "links as "
                             "[id, origin, slot, target, slot, type]")


def _check_api(path: Path, data: dict) -> None:
    if not data:
        raise InputError(f"'{path.name}', an empty JSON object", EXPECTED)
    for node_id, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            raise InputError(f"'{path.name}': entry '{node_id}' without a 'class_type'", EXPECTED)
        if not isinstance(entry.get("inputs"), dict):
            raise InputError(f"'{path.name}': node {node_id} ({entry['class_type']}) without an 'inputs' object",
                             EXPECTED)
