"""Sampling caches: fewer DiT evaluations without retraining, each policy measured against the uncached run.

Two policies, usable alone or together (`off` is the default and runs every forward):

* `adaptive`: a whole forward of one CFG branch is replaced by the last computed
  output-minus-input residual while the output is predicted to change little.
  The prediction is the branch's transformation rate k = |o_a - o_b| / |x_a - x_b|
  (its last two computed steps) times the input's change since its last computed
  step, relative to that output; it accumulates over skipped steps, and a forward
  runs once the sum reaches `threshold`. The first `warmup` steps always run; cond
  and uncond are decided separately.
* `wan`: the Wan report's two caches. Self-attention outputs are similar from step
  to step within a block, so from `attention_start` on each block's self-attention
  is recomputed only every `attention_interval` steps and reused in between; late
  in sampling (from `uncond_start`) conditional and unconditional outputs move
  together, so the unconditional branch runs only every `uncond_interval` steps and
  in between is the conditional output plus the last measured (uncond - cond)
  difference, whose high frequencies are kept as measured and whose low
  frequencies follow the current step (a FasterCache-style compensation).

The latent shift and the Fourier features enter every evaluated forward as
always; a replaced forward runs no block, so block swap moves no weights for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..errors import InputError

POLICIES = ("off", "adaptive", "wan")
SCHEDULE_SUFFIX = ".cache.json"  # a `wan` schedule chosen for a model file, stored beside it


@dataclass(frozen=True)
class CacheSettings:
    """Which caches run and how eagerly (fractions are of the sampling steps)."""

    policies: tuple[str, ...] = ()
    # adaptive: accumulated predicted relative change before a forward runs. 0.2: on the miniature at 50 steps
    # 3.9x fewer forwards, 36.9 dB against uncached, object score within 0.03 (0.3 was 0.035 off; benchmarks.md)
    threshold: float = 0.2
    warmup: int = 3  # adaptive: steps that always run
    end: float = 1.0  # adaptive: no skipping after this fraction (the last steps set the details)
    attention_start: float = 0.2
    attention_interval: int = 2
    uncond_start: float = 0.4
    uncond_interval: int = 3
    explicit_schedule: bool = False  # the spec gave the wan numbers: a stored schedule does not replace them

    def __post_init__(self):
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise InputError(f"the cache policy {unknown[0]!r}", f"one of {', '.join(POLICIES)} (or a+b)")
        if self.threshold < 0 or self.warmup < 0 or min(self.attention_interval, self.uncond_interval) < 1:
            raise InputError(f"cache settings {asdict(self)}", "threshold >= 0, warmup >= 0, intervals >= 1")
        if not (0 <= self.attention_start <= 1 and 0 <= self.uncond_start <= 1 and 0 <= self.end <= 1):
            raise InputError(f"cache settings {asdict(self)}", "starts and end as fractions of the steps, 0 to 1")

    @property
    def active(self) -> bool:
        return any(p != "off" for p in self.policies)

    @classmethod
    def parse(cls, spec: str) -> CacheSettings:
        """'off', 'adaptive', 'adaptive:0.2' (threshold), 'wan', 'wan:2:3' (attention and unconditional
        intervals), 'wan:2:3:0.1:0.2' (and the fractions of the steps where each starts) or 'adaptive+wan'."""
        settings = cls()
        policies = []
        for part in (spec or "off").split("+"):
            name, *values = part.strip().split(":")
            try:
                numbers = [float(v) for v in values]
            except ValueError as exc:
                raise InputError(f"the cache setting {part!r}", "policy[:number...], e.g. adaptive:0.2") from exc
            most = {"adaptive": 1, "wan": 4}.get(name, 0)
            if len(numbers) > most or (name == "wan" and any(n != int(n) for n in numbers[:2])):
                raise InputError(f"the cache setting {part!r}", "adaptive[:threshold] or wan[:attention interval"
                                 "[:uncond interval[:attention start[:uncond start]]]], intervals whole numbers")
            if name == "adaptive" and numbers:
                settings = replace(settings, threshold=numbers[0])
            elif name == "wan" and numbers:
                settings = replace(settings, attention_interval=int(numbers[0]),
                                   uncond_interval=int(numbers[min(1, len(numbers) - 1)]))
                starts = dict(zip(("attention_start", "uncond_start"), numbers[2:4]))
                settings = replace(settings, explicit_schedule=True, **starts)
            policies.append(name)
        return replace(settings, policies=tuple(p for p in policies if p != "off"))

    def with_schedule(self, path: str | Path) -> CacheSettings:
        """The `wan` schedule stored beside a model file (`<file>.cache.json`), when there is one and the
        spec did not give its own numbers."""
        schedule = Path(str(path) + SCHEDULE_SUFFIX)
        if "wan" not in self.policies or self.explicit_schedule or not schedule.is_file():
            return self
        try:
            values = json.loads(schedule.read_text(encoding="utf-8"))
            return replace(self, **{k: type(getattr(self, k))(v) for k, v in values.items()
                                    if k.startswith(("attention_", "uncond_"))})
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"an unreadable cache schedule {schedule} ({exc})", "the JSON that "
                             "`python -m uniworld_core cache-calibrate` writes") from exc


@dataclass
class CacheStats:
    """What the cache saved in one sampling run."""

    forwards: int = 0  # branch forwards run (a CFG step runs up to two)
    skipped: int = 0  # branch forwards replaced by the adaptive residual
    uncond_reused: int = 0  # unconditional outputs replaced by cond + cached difference
    attention_reused: int = 0  # block self-attentions reused
    steps: int = 0

    def add(self, other: CacheStats) -> None:
        """Count another run's savings in these (a long video's runs share one tally)."""
        for key, value in other.__dict__.items():
            setattr(self, key, getattr(self, key) + value)

    def summary(self) -> str:
        total = self.forwards + self.skipped + self.uncond_reused
        return (f"{self.forwards}/{total} DiT forwards run ({self.skipped} skipped by the adaptive cache, "
                f"{self.uncond_reused} unconditional outputs reused), {self.attention_reused} block "
                f"self-attentions reused")


@dataclass
class _Branch:
    """One CFG branch's memory of its computed forwards."""

    inputs: list[torch.Tensor] = field(default_factory=list)  # the last two computed inputs
    outputs: list[torch.Tensor] = field(default_factory=list)
    accumulated: float = 0.0

    def remember(self, x: torch.Tensor, out: torch.Tensor) -> None:
        self.inputs, self.outputs = [*self.inputs[-1:], x], [*self.outputs[-1:], out]
        self.accumulated = 0.0

    def predicted_change(self, x: torch.Tensor) -> float | None:
        """The output's relative change predicted for input x (None until two forwards were computed)."""
        if len(self.outputs) < 2:
            return None
        moved = (self.inputs[1] - self.inputs[0]).norm()
        rate = (self.outputs[1] - self.outputs[0]).norm() / moved.clamp_min(1e-12)
        return float(rate * (x - self.inputs[1]).norm() / self.outputs[1].norm().clamp_min(1e-12))

    def residual_output(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.outputs[1] - self.inputs[1])


class AttentionReuse:
    """Each block's self-attention, computed on refresh steps and reused in between, per CFG branch."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.store: dict[tuple[int, str], torch.Tensor] = {}
        self.branches: tuple[str, ...] = ()  # the branches of the batch being evaluated, in order
        self.reuse = False
        self.reused = 0

    def _forward(self, index: int, compute: Callable):
        def forward(x, context, attention, rope=None):
            keys = [(index, branch) for branch in self.branches]
            if self.reuse and all(k in self.store for k in keys):
                self.reused += 1
                return torch.cat([self.store[k] for k in keys])
            out = compute(x, context, attention, rope)
            for k, part in zip(keys, out.split(1)):
                self.store[k] = part
            return out
        return forward

    @contextmanager
    def installed(self) -> Iterator[AttentionReuse]:
        """Route every block's self-attention through the cache for the duration of a sampling run."""
        for index, block in enumerate(self.blocks):
            block.self_attn.forward = self._forward(index, block.self_attn.forward)
        try:
            yield self
        finally:
            for block in self.blocks:
                del block.self_attn.forward  # back to the class's forward


class CachedGuidance:
    """Classifier-free guided velocity with the caches of `settings`; counts what it saved in `stats`."""

    def __init__(self, dit, settings: CacheSettings, steps: int, guidance_scale: float, batch_cfg: bool):
        self.dit, self.settings, self.steps = dit, settings, steps
        self.guidance_scale, self.batch_cfg = guidance_scale, batch_cfg
        self.branches = {"cond": _Branch(), "uncond": _Branch()}
        self.difference: torch.Tensor | None = None  # uncond - cond at the last step both ran
        self.attention = AttentionReuse(dit.blocks) if "wan" in settings.policies else None
        self.stats = CacheStats(steps=steps)

    def _adaptive_skip(self, name: str, step: int, x: torch.Tensor) -> bool:
        if "adaptive" not in self.settings.policies or step < self.settings.warmup:
            return False
        if step >= self.settings.end * self.steps:
            return False
        branch = self.branches[name]
        change = branch.predicted_change(x)
        if change is None or branch.accumulated + change >= self.settings.threshold:
            return False
        branch.accumulated += change
        return True

    def _uncond_reused(self, step: int) -> bool:
        start = int(self.settings.uncond_start * self.steps)
        return ("wan" in self.settings.policies and self.difference is not None and step >= start
                and (step - start) % self.settings.uncond_interval != 0)

    def _run(self, names: list[str], x, t, contexts: dict, features) -> dict[str, torch.Tensor]:
        """Forwards of the named branches (batched when allowed), remembered for the caches."""
        if self.attention is not None:
            start = int(self.settings.attention_start * self.steps)
            self.attention.reuse = bool(self._step >= start and (self._step - start) % self.settings.attention_interval)
        batch = self.batch_cfg and len(names) == 2 and contexts["cond"].shape == contexts["uncond"].shape
        groups = [names] if batch else [[n] for n in names]
        out = {}
        for group in groups:
            if self.attention is not None:
                self.attention.branches = tuple(group)
            n = len(group)
            result = self.dit(torch.cat([x] * n), torch.cat([t] * n), torch.cat([contexts[g] for g in group]),
                              torch.cat([features] * n)).float()
            out.update(zip(group, result.chunk(n)))
        for name in names:
            self.branches[name].remember(x.float(), out[name])
        self.stats.forwards += len(names)
        return out

    def __call__(self, step: int, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 negative: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        self._step = step
        contexts = {"cond": context, "uncond": negative}
        names = ["cond"] if negative is None or self.guidance_scale == 1.0 else ["cond", "uncond"]
        out, todo = {}, []
        for name in names:
            if self._adaptive_skip(name, step, x.float()):
                out[name] = self.branches[name].residual_output(x.float())
                self.stats.skipped += 1
            elif name == "uncond" and self._uncond_reused(step):
                out[name] = None  # filled from the conditional output below
            else:
                todo.append(name)
        out.update(self._run(todo, x, t, contexts, features) if todo else {})
        if len(names) == 1:
            return out["cond"]
        if out["uncond"] is None:
            out["uncond"] = out["cond"] + self.difference
            self.stats.uncond_reused += 1
        elif "cond" in todo and "uncond" in todo:
            self.difference = out["uncond"] - out["cond"]
        return out["uncond"] + self.guidance_scale * (out["cond"] - out["uncond"])

    @contextmanager
    def active(self) -> Iterator[CachedGuidance]:
        """The attention cache installed (when `wan` is on) for the duration of a run."""
        if self.attention is None:
            yield self
            return
        with self.attention.installed():
            yield self
        self.stats.attention_reused = self.attention.reused


# The `wan` schedules calibration tries, from the most caching to the least.
# On the miniature at 50 steps, reusing the unconditional output 5 steps in 6 from 10% of the steps saved
# more than reusing it every other step from 40%, at a higher PSNR (docs/benchmarks.md).
WAN_CANDIDATES = [dict(attention_start=a_start, attention_interval=a_int, uncond_start=u_start, uncond_interval=u_int)
                  for a_int, u_int in ((4, 8), (3, 6), (3, 4), (2, 3))
                  for a_start, u_start in ((0.1, 0.1), (0.2, 0.2), (0.3, 0.4))]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of frames in 0..1."""
    mse = (a.float() - b.float()).square().mean().clamp_min(1e-12)
    return float(10 * torch.log10(1 / mse))


def choose_wan_schedule(render: Callable[[CacheSettings], torch.Tensor], min_psnr: float,
                        candidates: list[dict] = WAN_CANDIDATES) -> tuple[dict, list[str]]:
    """The fastest `wan` schedule whose video stays `min_psnr` dB from the uncached one.

    `render(cache)` samples the validation input(s) and returns frames. Speed is
    wall time against an uncached run timed just before each candidate. Returns the
    chosen entry (for `<dit>.cache.json`) and one line per candidate tried.
    """
    import time

    def timed(settings: CacheSettings) -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        frames = render(settings)
        return frames, time.perf_counter() - started

    reference, _ = timed(CacheSettings())  # also the warm-up: first runs pay one-off costs
    rows, best = [], None
    for values in candidates:
        _, uncached = timed(CacheSettings())  # timed beside each candidate: the machine's load changes
        frames, cached = timed(CacheSettings(policies=("wan",), **values))
        ratio, quality = uncached / cached, psnr(frames, reference)
        rows.append(f"{values}: {quality:.1f} dB, {ratio:.2f}x")
        if quality >= min_psnr and (best is None or ratio > best["speedup"]):
            best = {"schedule": values, "psnr_db": round(quality, 2), "speedup": round(ratio, 3)}
    if best is None:
        raise InputError(f"no wan schedule keeping {min_psnr:g} dB (best tried: {max(rows)})",
                         "a lower --min-psnr, or the adaptive cache")
    return {**best["schedule"], "measured": {k: v for k, v in best.items() if k != "schedule"},
            "schedule": best["schedule"]}, rows
