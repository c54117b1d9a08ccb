"""Workflow files: UI format -> API format (as ComfyUI's frontend converts), and validation.

UI format (version 0.4) stores each node's widget values as a list in widget
order; an INT widget with `control_after_generate` is followed by its
"fixed"/"randomize" value and an image-upload combo by its upload widget value,
neither of which reaches the API. Muted nodes (mode 2) are dropped, bypassed
nodes (mode 4) pass their input of the same type through, Note nodes and
Reroutes are not executed.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
VIRTUAL_NODES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """A workflow problem, naming the node and the input."""

    def __init__(self, node_id, node_type: str, problem: str, fix: str | None = None):
        self.node_id, self.node_type = node_id, node_type
        message = f"node {node_id} ({node_type}): {problem}"
        super().__init__(message + (f". {fix}" if fix else ""))


def input_specs(node_class) -> list[tuple[str, object, dict, bool]]:
    """(name, type, options, required) of every input, in INPUT_TYPES order."""
    types = node_class.INPUT_TYPES()
    out = []
    for section, required in (("required", True), ("optional", False)):
        for name, value in types.get(section, {}).items():
            kind, options = value[0], (value[1] if len(value) > 1 else {})
            out.append((name, kind, options, required))
    return out


def is_widget(kind, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def extra_widget_values(name: str, kind, options: dict) -> int:
    """How many frontend-only widget values follow this widget's value."""
    if kind == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        return 1
    if options.get("image_upload") or options.get("video_upload"):
        return 1
    return 0


def widget_values(node: dict, node_class) -> dict[str, object]:
    """Map a UI node's widgets_values list onto its widget inputs."""
    values = list(node.get("widgets_values") or [])
    if isinstance(node.get("widgets_values"), dict):  # some nodes store a dict
        return dict(node["widgets_values"])
    out, i = {}, 0
    for name, kind, options, _ in input_specs(node_class):
        if not is_widget(kind, options):
            continue
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1 + extra_widget_values(name, kind, options)
    return out


@dataclass
class _Link:
    origin: int
    slot: int
    type: str


def _links(workflow: dict) -> dict[int, _Link]:
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            out[link["id"]] = _Link(link["origin_id"], link["origin_slot"], link.get("type", "*"))
        else:
            out[link[0]] = _Link(link[1], link[2], link[5] if len(link) > 5 else "*")
    return out


def _resolve(link: _Link | None, nodes: dict[int, dict], links: dict[int, _Link]) -> _Link | None:
    """Follow a link through bypassed nodes and reroutes to a real output."""
    while link is not None:
        source = nodes.get(link.origin)
        if source is None:
            return None
        if source.get("mode") == MUTED:
            return None
        if source.get("mode") != BYPASSED and source["type"] != "Reroute":
            return link
        same = [i for i in source.get("inputs", []) if i.get("link") is not None
                and (source["type"] == "Reroute" or i.get("type") == link.type)]
        link = links.get(same[0]["link"]) if same else None
    return None


def ui_to_api(workflow: dict, node_classes: dict[str, type],
              display_names: dict[str, str] | None = None) -> dict[str, dict]:
    """The API-format prompt ({id: {class_type, inputs, _meta}}) of a UI-format workflow."""
    display_names = display_names or {}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = _links(workflow)
    prompt = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        if node["type"] in VIRTUAL_NODES or node.get("mode") in (MUTED, BYPASSED):
            continue
        node_class = node_classes.get(node["type"])
        if node_class is None:
            raise WorkflowError(node_id, node["type"], "is not a known node type",
                                "Install the node pack it comes from, or remove the node.")
        inputs = widget_values(node, node_class)
        for slot in node.get("inputs", []):
            link = _resolve(links.get(slot.get("link")), nodes, links)
            if link is not None:
                inputs[slot["name"]] = [str(link.origin), link.slot]
        title = node.get("title") or display_names.get(node["type"], node["type"])
        prompt[str(node_id)] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt
