"""The one progress/interrupt hook of the pack.

Long loops (sampling, VAE chunks) call `hook(done, total, preview)` after each
unit of work. A hook reports progress and may raise `Interrupted` (or
ComfyUI's own interrupt exception) to stop at that point; nothing else is
needed to make a loop cancellable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ProgressHook = Callable[[int, int, torch.Tensor | None], None]


def report(hook: ProgressHook | None, done: int, total: int,
           preview: torch.Tensor | None = None) -> None:
    """Call the hook if there is one."""
    if hook is not None:
        hook(done, total, preview)


def print_progress(label: str) -> ProgressHook:
    """A plain console hook for the command line."""

    def hook(done: int, total: int, preview: torch.Tensor | None = None) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label}: {done}/{total}", end=end, flush=True)

    return hook
