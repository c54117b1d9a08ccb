"""Headless runner: validate and execute a UI- or API-format workflow with our nodes.

    python run_workflow.py workflows/uniworld_osp2_i2sv.json --models models --input input --output output

Core ComfyUI nodes used by our workflows run as stand-ins here (see
standins.py); in ComfyUI the real ones are used.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections import deque
from pathlib import Path

from ...uniworld_core.errors import UniWorldError
from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .standins import FOLDERS, STANDIN_TITLES, STANDINS
from .workflow import WorkflowError, input_specs, is_widget, ui_to_api
from .workflow_file import read_workflow


def node_classes() -> dict[str, type]:
    return {**STANDINS, **NODE_CLASS_MAPPINGS}


def display_names() -> dict[str, str]:
    return {**STANDIN_TITLES, **NODE_DISPLAY_NAME_MAPPINGS}


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _check_value(node_id, title, name, kind, options, value) -> None:
    def fail(problem, fix=None):
        raise WorkflowError(node_id, title, f"input '{name}' {problem}", fix)

    if isinstance(kind, list):
        if value not in kind:
            folder = options.get("model_folder")
            if folder:
                fail(f"names '{value}', which is not in models/{folder}",
                     "Download the file into that folder (see the workflow's Note) or pick another.")
            fail(f"is '{value}', not one of the {len(kind)} choices {kind[:6]}")
        return
    python_type = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}.get(kind)
    if python_type and (not isinstance(value, python_type) or (kind != "BOOLEAN" and isinstance(value, bool))):
        fail(f"is {value!r}, not a {kind}")
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            fail(f"is {value}, outside {low}..{high}")


def _custom_checked(node_class) -> set[str]:
    """Inputs a node validates itself (VALIDATE_INPUTS): ComfyUI then skips its range and list checks for them."""
    check = getattr(node_class, "VALIDATE_INPUTS", None)
    return set(inspect.signature(check).parameters) if check is not None else set()


def _check_link(prompt, classes, node_id, title, name, kind, value) -> None:
    source = prompt.get(value[0])
    if source is None:
        raise WorkflowError(node_id, title, f"input '{name}' is linked to node {value[0]}, which is "
                            "not in the workflow (muted or deleted?)")
    outputs = classes[source["class_type"]].RETURN_TYPES
    produced = outputs[value[1]] if 0 <= value[1] < len(outputs) else None
    expected = "COMBO" if isinstance(kind, list) else kind
    if produced != expected and "*" not in (produced, expected):
        raise WorkflowError(node_id, title, f"input '{name}' receives {produced} from node {value[0]} "
                            f"({source['class_type']}); expected {expected}")


def validate(prompt: dict[str, dict], classes: dict[str, type]) -> None:
    """Raise WorkflowError for the first problem: unknown node, missing input, wrong type, bad value.

    As in ComfyUI, a node's VALIDATE_INPUTS replaces the list and range checks
    of the inputs it names, and its answer (True or a message) decides them.
    """
    for node_id, entry in prompt.items():  # every node type first: links are checked against them
        if entry["class_type"] not in classes:
            raise WorkflowError(node_id, entry["class_type"], "is not a known node type",
                                "Install the node pack it comes from, or remove the node.")
    for node_id, entry in prompt.items():
        node_class = classes[entry["class_type"]]
        meta = entry.get("_meta")
        title = meta.get("title", entry["class_type"]) if isinstance(meta, dict) else entry["class_type"]
        custom = _custom_checked(node_class)
        for name, kind, options, required in input_specs(node_class):
            if name not in entry["inputs"]:
                if required:
                    raise WorkflowError(node_id, title, f"input '{name}' is missing (connect it or set a value)")
                continue
            value = entry["inputs"][name]
            if _is_link(value):
                _check_link(prompt, classes, node_id, title, name, kind, value)
            elif not is_widget(kind, options):
                raise WorkflowError(node_id, title, f"input '{name}' needs a connection from a {kind} output")
            elif name not in custom:
                _check_value(node_id, title, name, kind, options, value)
        if custom:
            given = {k: v for k, v in entry["inputs"].items() if k in custom and not _is_link(v)}
            try:
                verdict = node_class.VALIDATE_INPUTS(**given)
            except (TypeError, ValueError, AttributeError) as exc:  # values of a type no widget makes
                verdict = f"inputs it cannot check ({exc.__class__.__name__}: {exc})"
            if verdict is not True:
                raise WorkflowError(node_id, title, str(verdict))


def _order(prompt: dict[str, dict]) -> list[str]:
    needs = {n: {v[0] for v in e["inputs"].values() if _is_link(v)} for n, e in prompt.items()}
    ready = deque(sorted((n for n, d in needs.items() if not d), key=int))
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for other in sorted(needs, key=int):
            if node in needs[other]:
                needs[other].discard(node)
                if not needs[other] and other not in order and other not in ready:
                    ready.append(other)
    if len(order) != len(prompt):
        raise WorkflowError("?", "workflow", "has a cycle of links")
    return order


def execute(prompt: dict[str, dict], classes: dict[str, type] | None = None) -> dict[str, object]:
    """Run every node in dependency order; returns each output node's UI result."""
    classes = classes or node_classes()
    validate(prompt, classes)
    results: dict[str, tuple] = {}
    ui: dict[str, object] = {}
    for node_id in _order(prompt):
        entry = prompt[node_id]
        node_class = classes[entry["class_type"]]
        kwargs = {k: (results[v[0]][v[1]] if _is_link(v) else v) for k, v in entry["inputs"].items()}
        out = getattr(node_class(), node_class.FUNCTION)(**kwargs)
        if isinstance(out, dict):
            ui[node_id] = out.get("ui")
            out = out.get("result", ())
        results[node_id] = tuple(out)
    return ui


def load_prompt(path: Path) -> dict[str, dict]:
    """API-format prompt from a UI- or API-format workflow file (malformed files: an InputError naming it)."""
    data = read_workflow(path)
    return ui_to_api(data, node_classes(), display_names()) if "nodes" in data else data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a ComfyUI workflow of UniWorld nodes headless.")
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--models", type=Path, help="models folder (diffusion_models, vae, text_encoders, loras)")
    parser.add_argument("--input", type=Path, default=Path("input"), help="folder LoadImage reads from")
    parser.add_argument("--output", type=Path, default=Path("output"), help="folder SaveVideo writes to")
    parser.add_argument("--validate", action="store_true", help="only check the workflow (file, node types, "
                        "links, values, model files) and run nothing")
    args = parser.parse_args(argv)
    if args.models is not None:
        import os

        os.environ["UNIWORLD_MODELS_DIR"] = str(args.models)
    FOLDERS.input, FOLDERS.output = args.input, args.output
    try:
        prompt = load_prompt(args.workflow)
        if args.validate:
            validate(prompt, node_classes())
            print(f"{args.workflow}: valid ({len(prompt)} nodes)")
            return 0
        ui = execute(prompt)
    except (WorkflowError, UniWorldError) as exc:
        named = str(exc) if args.workflow.name in str(exc) else f"{args.workflow.name}: {exc}"
        print(f"error: {named}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing more was written", file=sys.stderr)
        return 130
    for node_id, result in ui.items():
        for path in (result or {}).get("videos", []):
            print(f"node {node_id} wrote {path}")
    return 0
