"""The pack inside a real ComfyUI: every shipped workflow runs through /prompt and opens clean in the frontend.

    <ComfyUI's python> tests/comfyui_live.py --comfyui /path/to/ComfyUI [--report docs/comfyui_live.md]
        [--screenshots docs/screenshots] [--commit a125cd8]

Run it with the Python that runs ComfyUI, after `pip install -r requirements.txt` there, with
playwright from PyPI (`pip install playwright`) and a Chromium (Debian's /usr/bin/chromium, or
--chromium PATH). Nothing in the given ComfyUI folder is changed: ComfyUI starts with
`--base-directory` pointing at a scratch folder that holds a copy of the pack in custom_nodes/
(copied as a user's install is, not linked), tiny stand-in model files in the real layouts
(tests/comfyui_standins.py; ComfyUI's own bundled Qwen2.5 tokenizer sizes the Qwen2.5-VL) and the
input images. Then:
- every API workflow in workflows/ is queued through POST /prompt (CPU-sized: 64x48, 5 frames,
  3 steps; the miniature workflow as shipped) and must finish with status "success" and a video
  file; two variants run the flagship workflow with a Hugging Face Qwen2.5-VL folder and the
  official Wan2.1_VAE.pth, and a file of the wrong kind must fail with the loader's explanation;
- every UI workflow is opened in the frontend (headless Chromium): no missing node types, no
  two nodes overlapping, the whole graph below the top bar, no console errors while it loads, no
  missing-models dialog while every file is there, and, with the published files taken away, a
  dialog listing exactly those files, each downloadable. A screenshot of each is saved.
Each check prints one line (PASS/FAIL); the exit status is the number of failures. With
--report, the lines go to a Markdown file with the ComfyUI version and commit they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]
PACK_DIR = "uniworld-osp2"  # the folder name a `git clone` of the pack gives
SMALL = {"width": 64, "height": 48, "frames": 5, "steps": 3}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Console noise of a fresh ComfyUI with no network, present before any workflow is opened (README of
# the install): user files that do not exist yet, and the release check of api.comfy.org.
STARTUP_NOISE = ("user.css", "comfy.templates.json", "userdata?dir=", "api.comfy.org", "ERR_NAME_NOT_RESOLVED")


class Report:
    """Check lines, as printed and as they go to the Markdown report."""

    def __init__(self):
        self.lines: list[str] = []
        self.failures = 0

    def check(self, ok: bool, subject: str, what: str, detail: str = "") -> bool:
        line = f"{'PASS' if ok else 'FAIL'}  {subject}: {what}" + (f" ({detail})" if detail else "")
        self.lines.append(line)
        self.failures += not ok
        print(line, flush=True)
        return ok


# ---- the scratch ComfyUI base folder

def prepare(base: Path, comfyui: Path) -> dict[str, Path]:
    """custom_nodes/<pack copy>, models/ with stand-in files, input/ images; returns the written models."""
    from comfyui_standins import write_model_files
    from PIL import Image
    from transformers import AutoTokenizer

    from uniworld_core.presets.miniature import examples

    shutil.copytree(REPO, base / "custom_nodes" / PACK_DIR, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "outputs"))
    tokenizer = AutoTokenizer.from_pretrained(comfyui / "comfy" / "text_encoders" / "qwen25_tokenizer")
    written = write_model_files(base / "models", len(tokenizer), hf_tokenizer=tokenizer)
    (base / "input").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (80, 60), (120, 160, 200)).save(base / "input" / "input.png")
    for example in examples():
        shutil.copy(example["image"], base / "input")
    return written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_comfyui(comfyui: Path, base: Path, python: str, port: int, log: Path) -> subprocess.Popen:
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--base-directory", str(base)]
    process = subprocess.Popen(cmd, cwd=comfyui, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited ({process.returncode}); see {log}")
        try:
            get(port, "/system_stats")
            return process
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"ComfyUI did not answer within 300 s; see {log}")


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def post(port: int, path: str, body: dict):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# ---- API runs

def small(prompt: dict) -> dict:
    """The same CPU-sized overrides a user could make in the widgets."""
    for entry in prompt.values():
        for key, value in SMALL.items():
            if key in entry["inputs"] and not isinstance(entry["inputs"][key], list):
                entry["inputs"][key] = value
    return prompt


def run_prompt(port: int, prompt: dict, timeout: float = 1800) -> tuple[str, dict]:
    """Queue a prompt and wait for it: ("success", history entry) or (error text, entry)."""
    status, answer = post(port, "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    if status != 200 or answer.get("node_errors"):
        return f"rejected: {json.dumps(answer)[:600]}", {}
    prompt_id, deadline = answer["prompt_id"], time.time() + timeout
    while time.time() < deadline:
        history = get(port, f"/history/{prompt_id}").get(prompt_id)
        if history and history.get("status", {}).get("completed") is not None:
            state = history["status"]
            if state.get("status_str") == "success":
                return "success", history
            errors = [m[1].get("exception_message", "") for m in state.get("messages", [])
                      if m[0] == "execution_error"]
            return f"{state.get('status_str')}: {' '.join(errors)[:600]}", history
        time.sleep(1)
    return "timed out", {}


def saved_videos(history: dict, output: Path) -> list[Path]:
    found = []
    for node_output in history.get("outputs", {}).values():
        for item in node_output.get("images", []) + node_output.get("videos", []):
            found.append(output / item.get("subfolder", "") / item["filename"])
    return found


def api_checks(report: Report, port: int, base: Path) -> None:
    for path in sorted((REPO / "workflows").glob("*.api.json")):
        name = path.name.removesuffix(".api.json")
        prompt = json.loads(path.read_text())
        prompt = prompt if name == "toy_world_miniature" else small(prompt)
        started = time.time()
        outcome, history = run_prompt(port, prompt)
        videos = [v for v in saved_videos(history, base / "output") if v.is_file()]
        report.check(outcome == "success" and bool(videos), name, "queued through /prompt, ran, saved a video",
                     f"{outcome}, {len(videos)} video(s), {time.time() - started:.0f} s")
    flagship = small(json.loads((REPO / "workflows" / "uniworld_osp2_i2sv.api.json").read_text()))
    for entry in flagship.values():
        if entry["class_type"] == "UniWorldVLMLoader":
            entry["inputs"].update(vlm="Qwen2.5-VL-7B-Instruct", tokenizer="(tokenizer in the model folder)")
        if entry["class_type"] == "UniWorldVAELoader":
            entry["inputs"]["vae_name"] = "Wan2.1_VAE.pth"
    outcome, history = run_prompt(port, flagship)
    report.check(outcome == "success", "uniworld_osp2_i2sv", "runs with a Hugging Face Qwen2.5-VL folder and the "
                 "official Wan2.1_VAE.pth", outcome)
    wrong = small(json.loads((REPO / "workflows" / "flashi2v_1.3B_umt5.api.json").read_text()))
    for entry in wrong.values():
        if entry["class_type"] == "UniWorldDiTLoader":
            entry["inputs"]["dit_name"] = "uniworld_osp2_adapter.safetensors"
    outcome, _ = run_prompt(port, wrong)
    report.check("VLM encoder adapter" in outcome, "UniWorld DiT Loader", "a file of another kind picked anyway "
                 "is explained by the loader", outcome[:200])


def listing_checks(report: Report, port: int) -> None:
    """What the loaders offer, as the frontend receives it from /object_info."""
    from run_workflow import load_pack

    info = get(port, "/object_info")
    defined = set(load_pack("uniworld_live_check").NODE_CLASS_MAPPINGS)
    ours = sorted(k for k, v in info.items() if v.get("python_module", "").endswith(PACK_DIR))
    report.check(set(ours) == defined, "pack", f"all {len(defined)} UniWorld nodes registered", ", ".join(ours))

    def combo(node, name):
        spec = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}[name]
        return spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])

    expected = {
        ("UniWorldDiTLoader", "dit_name"): {"flashi2v_1.3B.safetensors", "uniworld_osp2_dit_14B_bf16.safetensors",
                                            "uniworld_osp2_dit_14B_Q4_K.gguf", "toy_dit.safetensors"},
        ("UniWorldVLMLoader", "adapter_name"): {"uniworld_osp2_adapter.safetensors", "toy_adapter.safetensors"},
        ("UniWorldVAELoader", "vae_name"): {"wan_2.1_vae.safetensors", "Wan2.1_VAE.pth", "toy_vae.safetensors"},
        ("UniWorldVLMLoader", "vlm"): {"qwen_2.5_vl_7b_fp8_scaled.safetensors", "Qwen2.5-VL-7B-Instruct", "toy_vlm"},
        ("UniWorldT5Loader", "t5_name"): {"umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
        ("UniWorldT5Loader", "tokenizer"): {"(tokenizer in the model file or folder)"},
    }
    for (node, name), files in expected.items():
        offered = set(combo(node, name))
        report.check(offered == files, node, f"{name} offers only its kind", ", ".join(sorted(offered)))
    styles = set(combo("UniWorldStyleSelect", "style"))
    report.check({"neon", "pencil sketch", "photo"} <= styles, "UniWorldStyleSelect",
                 "offers the miniature model's own styles", f"{len(styles)} styles")


# ---- the frontend

NODES_JS = """() => window.app.graph._nodes.map(n => ({id: n.id, type: n.type, bound: Array.from(n.getBounding()),
    size: Array.from(n.size), registered: n.type in LiteGraph.registered_node_types}))"""
VIEW_JS = """() => { const c = window.app.canvas, box = c.canvas.getBoundingClientRect();
    const bar = document.getElementById('comfyui-body-top')?.getBoundingClientRect();
    return {offset: Array.from(c.ds.offset), scale: c.ds.scale, low_quality: c.low_quality,
            bar: bar ? bar.bottom : 0, canvas: [box.left, box.top, box.right, box.bottom]}; }"""
DIALOGS_JS = "() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)"


def overlaps(nodes: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["bound"], b["bound"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"{a['type']} #{a['id']} / {b['type']} #{b['id']}")
    return found


def on_screen(nodes: list[dict], view: dict) -> tuple[float, float, float, float]:
    """The graph's bounding box in window pixels (left, top, right, bottom): canvas pixel = (pos + offset) * scale."""
    (ox, oy), scale, (cx, cy, _, _) = view["offset"], view["scale"], view["canvas"]
    return (cx + min((n["bound"][0] + ox) * scale for n in nodes),
            cy + min((n["bound"][1] + oy) * scale for n in nodes),
            cx + max((n["bound"][0] + n["bound"][2] + ox) * scale for n in nodes),
            cy + max((n["bound"][1] + n["bound"][3] + oy) * scale for n in nodes))


def open_workflow(page, workflow: dict, name: str, errors: list[str]) -> dict:
    """Open a UI workflow as dropping its file does; returns nodes, view, dialogs and console errors."""
    errors.clear()
    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }",
                  [workflow, name])
    page.wait_for_timeout(2500)
    return {"nodes": page.evaluate(NODES_JS), "view": page.evaluate(VIEW_JS), "dialogs": page.evaluate(DIALOGS_JS),
            "errors": list(errors)}


def close_dialogs(page) -> None:
    for _ in range(3):
        if not page.evaluate(DIALOGS_JS):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def published(workflow: dict) -> set[tuple[str, str]]:
    """(directory, name) of the files the workflow's loaders list with a download URL."""
    return {(m["directory"], m["name"]) for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])}


def listed_missing(dialogs: list[str], workflow: dict) -> set[tuple[str, str]]:
    """The files a missing-models dialog names, as the "directory / name" labels it shows."""
    text = "\n".join(dialogs)
    candidates = {(m["directory"], m["name"]) for n in workflow["nodes"]
                  for m in n.get("properties", {}).get("models", [])}
    return {c for c in candidates if f"{c[0]} / {c[1]}" in text}


def clean_open_checks(report: Report, fresh_page, errors: list[str], screenshots: Path | None) -> None:
    """Every file present: each UI workflow opens (in a fresh tab set) with no missing node, overlap, dialog
    or error."""
    for path in sorted(p for p in (REPO / "workflows").glob("*.json") if not p.name.endswith(".api.json")):
        context, page = fresh_page()
        name, workflow = path.stem, json.loads(path.read_text())
        seen = open_workflow(page, workflow, path.name, errors)
        missing = sorted({n["type"] for n in seen["nodes"] if not n["registered"]})
        report.check(not missing and len(seen["nodes"]) == len(workflow["nodes"]), name,
                     "0 missing nodes", f"{len(seen['nodes'])} nodes" + (f"; missing {missing}" if missing else ""))
        clash = overlaps(seen["nodes"])
        report.check(not clash, name, "0 overlapping nodes", "; ".join(clash[:5]))
        view, (left, top, right, bottom) = seen["view"], on_screen(seen["nodes"], seen["view"])
        cx, cy, cr, cb = view["canvas"]
        whole = right <= cr and bottom <= cb
        report.check(top >= view["bar"] and cx <= left < cr and cy <= top < cb and not view["low_quality"], name,
                     "opens below the top bar, its top-left corner in view, at a zoom with text",
                     f"graph at x {left:.0f}..{right:.0f}, y {top:.0f}..{bottom:.0f} in a canvas at "
                     f"x {cx:.0f}..{cr:.0f}, y {cy:.0f}..{cb:.0f} (top bar ends at {view['bar']:.0f}); "
                     f"zoom {view['scale']:.2f}; " + ("all of it in view" if whole else "pan to see the rest"))
        report.check(not seen["dialogs"], name, "no missing-models dialog with every file present",
                     " | ".join(d[:200] for d in seen["dialogs"]))
        report.check(not seen["errors"], name, "no console errors while it opens", " | ".join(seen["errors"])[:400])
        if screenshots is not None:
            page.screenshot(path=str(screenshots / f"{name}.png"))
        context.close()


def missing_models_checks(report: Report, page, errors: list[str], base: Path, screenshots: Path | None) -> None:
    """The published files taken away: each workflow's dialog lists exactly those, each downloadable."""
    aside = base / "aside"
    aside.mkdir(exist_ok=True)
    workflows = {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "workflows").glob("*.json"))
                 if not p.name.endswith(".api.json")}
    taken = {f for wf in workflows.values() for f in published(wf)}
    for directory, name in taken:
        shutil.move(base / "models" / directory / name, aside / name)
    try:
        for stem, workflow in workflows.items():
            seen = open_workflow(page, workflow, f"{stem}.json", errors)
            expected, listed = published(workflow), listed_missing(seen["dialogs"], workflow)
            refused = [w for w in ("not allowed", "Invalid directory", "Only allowed suffixes")
                       if w in "\n".join(seen["dialogs"])]
            report.check(listed == expected and not refused and (bool(seen["dialogs"]) == bool(expected)), stem,
                         "missing-models dialog lists exactly the files the folders lack, each downloadable",
                         ", ".join(f"{d}/{n}" for d, n in sorted(listed)) or "no dialog, nothing to download"
                         + (f"; refused: {refused}" if refused else ""))
            if screenshots is not None and stem == "uniworld_osp2_i2sv":
                page.screenshot(path=str(screenshots / "missing_models_dialog.png"))
            close_dialogs(page)
    finally:
        for directory, name in taken:
            shutil.move(aside / name, base / "models" / directory / name)


def open_frontend(browser, port: int, errors: list[str]):
    """A fresh browser context (no open workflow tabs) on the frontend, ready for a workflow."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=120000)
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=180000)
    page.wait_for_timeout(5000)
    page.keyboard.press("Escape")  # the first-run template dialog
    page.wait_for_timeout(1000)
    return context, page


def frontend_checks(report: Report, port: int, base: Path, chromium: str, screenshots: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        errors: list[str] = []
        context, page = open_frontend(browser, port, errors)
        startup = [e for e in errors if "Failed to load resource" not in e]  # each failed load is also an HTTP line
        unexpected = [e for e in startup if not any(n in e for n in STARTUP_NOISE)
                      and "reading 'id'" not in e]
        report.check(not unexpected, "frontend", "start-up console errors are only a fresh install's noise",
                     f"{len(startup)} lines: " + " | ".join(sorted(set(startup)))[:500])
        clean_open_checks(report, lambda: open_frontend(browser, port, errors), errors, screenshots)
        missing_models_checks(report, page, errors, base, screenshots)
        context.close()
        browser.close()


def install_checks(report: Report, python: str) -> None:
    """What `pip install` of the pack would change in ComfyUI's Python: nothing already installed may change."""
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True).stdout)}
    for route, target in (("pip install -r requirements.txt", ["-r", str(REPO / "requirements.txt")]),
                          ("pip install <pack> (pyproject dependencies)", [str(REPO)])):
        with tempfile.TemporaryDirectory() as scratch:
            plan = Path(scratch) / "plan.json"
            run = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(plan),
                                  *target], capture_output=True, text=True)
            if run.returncode != 0:
                report.check(False, "install", route, run.stderr.strip()[-300:])
                continue
            plan = json.loads(plan.read_text())
            wanted = [(i["metadata"]["name"], i["metadata"]["version"]) for i in plan["install"]]
        changed = [f"{n} {installed[n.lower().replace('_', '-')]} -> {v}" for n, v in wanted
                   if n.lower().replace("_", "-") in installed]
        added = [f"{n} {v}" for n, v in wanted if n.lower().replace("_", "-") not in installed]
        report.check(not changed, "install", f"{route} changes none of the installed packages",
                     f"would add: {', '.join(added) or 'nothing'}" + (f"; would change: {changed}" if changed else ""))


def comfyui_commit(comfyui: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(comfyui), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout; pass --commit)"


KEPT = "<!-- Below this line: notes by hand, kept when tests/comfyui_live.py rewrites the file. -->"


def write_report(path: Path, report: Report, stats: dict, commit: str, seconds: float) -> None:
    """The check lines as Markdown; whatever follows the KEPT line of an existing file stays."""
    from importlib.metadata import version

    versions = (f"ComfyUI {stats['system']['comfyui_version']} (commit {commit}), frontend "
                f"{version('comfyui_frontend_package')}, Python {platform.python_version()}, "
                f"PyTorch {stats['system']['pytorch_version']} on {stats['devices'][0]['type']}, "
                f"transformers {version('transformers')}, playwright {version('playwright')}, Chromium")
    kept = path.read_text(encoding="utf-8").partition(KEPT)[2] if path.is_file() else "\n"
    body = ["# The pack inside a real ComfyUI", "",
            "Output of `tests/comfyui_live.py` (its docstring says what each check does; "
            "`pytest tests/test_comfyui_live.py` runs it when `UNIWORLD_COMFYUI_DIR` is set). "
            "One line per workflow and check.", "",
            f"Ran on: {versions}; {time.strftime('%Y-%m-%d')}, {seconds:.0f} s in all.", "",
            f"Result: {len(report.lines) - report.failures} passed, {report.failures} failed.", "", "```",
            *report.lines, "```", "", KEPT]
    path.write_text("\n".join(body) + kept, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("UNIWORLD_COMFYUI_DIR"), required=False)
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--commit", help="ComfyUI's commit, for the report (read with git when omitted)")
    parser.add_argument("--report", type=Path, help="write the check lines to this Markdown file")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of each workflow as it opens here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args(argv)
    if args.comfyui is None or not (args.comfyui / "main.py").is_file():
        print("no ComfyUI checkout given: pass --comfyui DIR or set UNIWORLD_COMFYUI_DIR", file=sys.stderr)
        return 2
    started, report = time.time(), Report()
    scratch = Path(tempfile.mkdtemp(prefix="uniworld_comfyui_live_"))
    base, port = scratch / "base", free_port()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    prepare(base, args.comfyui)
    process = start_comfyui(args.comfyui, base, args.python, port, scratch / "comfyui.log")
    try:
        stats = get(port, "/system_stats")
        listing_checks(report, port)
        api_checks(report, port, base)
        frontend_checks(report, port, base, args.chromium, args.screenshots)
        install_checks(report, args.python)
    finally:
        process.terminate()
        process.wait(timeout=60)
    log = (scratch / "comfyui.log").read_text(errors="replace")
    report.check("IMPORT FAILED" not in log and "Cannot import" not in log, "pack", "imported by ComfyUI "
                 "without errors", next((line for line in log.splitlines() if "uniworld-osp2" in line), ""))
    if args.report:
        write_report(args.report, report, stats, comfyui_commit(args.comfyui, args.commit), time.time() - started)
    if args.keep:
        print(f"scratch folder: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return report.failures


if __name__ == "__main__":
    sys.exit(main())
