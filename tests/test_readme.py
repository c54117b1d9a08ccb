"""The README's Python example runs as written (on the shipped miniature model)."""

from __future__ import annotations

import re

from conftest import REPO

from uniworld_core.media import read_webp


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## From Python.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(REPO)
    code = code.replace('"outputs/neon.webp"', repr(str(tmp_path / "neon.webp")))
    exec(compile(code, "README.md", "exec"), {})
    assert read_webp(tmp_path / "neon.webp").shape == (17, 64, 64, 3)
