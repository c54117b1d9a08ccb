"""Run a ComfyUI workflow of UniWorld nodes without ComfyUI (see nodes/headless/runner.py).

The pack folder is imported as a package, as ComfyUI does, so that `nodes`
(ComfyUI's own top-level name) is never imported absolutely.
"""

import importlib.util
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parent


def load_pack(name: str = "uniworld_osp2_pack"):
    spec = importlib.util.spec_from_file_location(name, PACK / "__init__.py", submodule_search_locations=[str(PACK)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    pack = load_pack()
    sys.exit(importlib.import_module(f"{pack.__name__}.nodes.headless.runner").main())
