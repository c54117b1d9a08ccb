"""Sampling caches: `off` changes nothing, each policy skips what it says, at zero each is the uncached run."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_dit

from uniworld_core.sampling import CacheSettings, CacheStats, SamplerSettings, sample

STEPS = 12


def _inputs(dit, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 16, 3, 4, 6, generator=gen)
    start = torch.randn(1, 16, 1, 4, 6, generator=gen)
    context = torch.randn(1, 5, dit.cfg.text_dim, generator=gen)
    negative = torch.randn(1, 5, dit.cfg.text_dim, generator=gen)
    return noise, start, context, negative


def _run(dit, cache: str | CacheSettings = "off", steps: int = STEPS, **kwargs):
    settings = cache if isinstance(cache, CacheSettings) else CacheSettings.parse(cache)
    stats = CacheStats()
    noise, start, context, negative = _inputs(dit)
    out = sample(dit, noise, start, context, negative, SamplerSettings(steps=steps, shift=3.0, guidance_scale=4.0,
                                                                       cache=settings, **kwargs), stats=stats)
    return out, stats


@pytest.fixture(scope="module")
def dit():
    return tiny_dit()


def test_off_is_the_sampler_without_a_cache(dit):
    noise, start, context, negative = _inputs(dit)
    plain = sample(dit, noise, start, context, negative, SamplerSettings(steps=STEPS, shift=3.0, guidance_scale=4.0))
    off, stats = _run(dit, "off")
    assert torch.equal(plain, off)
    assert stats.forwards == stats.skipped == 0  # the cache machinery did not run at all


@pytest.mark.parametrize("spec", ["adaptive:0", "wan:1:1", "adaptive:0+wan:1:1"])
def test_every_policy_at_zero_reproduces_the_uncached_run_exactly(dit, spec):
    uncached, _ = _run(dit, "off")
    cached, stats = _run(dit, spec)
    assert torch.equal(cached, uncached), spec
    assert stats.skipped == stats.uncond_reused == stats.attention_reused == 0
    assert stats.forwards == 2 * STEPS


def test_adaptive_skips_forwards_and_stays_close(dit):
    uncached, _ = _run(dit, "off", steps=30)
    cached, stats = _run(dit, "adaptive:0.5", steps=30)
    assert stats.skipped > 0 and stats.forwards + stats.skipped == 2 * 30
    assert stats.forwards >= 2 * CacheSettings().warmup  # the warm-up steps always run, both branches
    error = ((cached - uncached).norm() / uncached.norm()).item()
    assert 0 < error < 0.2, error


def test_adaptive_skips_more_with_a_higher_threshold(dit):
    skipped = [_run(dit, f"adaptive:{t}", steps=30)[1].skipped for t in (0.1, 0.5, 2.0)]
    assert skipped[0] <= skipped[1] <= skipped[2] and skipped[2] > skipped[0], skipped


def test_wan_reuses_attention_and_uncond_on_its_schedule(dit):
    settings = CacheSettings(policies=("wan",), attention_start=0.25, attention_interval=2, uncond_start=0.5,
                             uncond_interval=3)
    _, stats = _run(dit, settings)
    attention_steps = [i for i in range(int(0.25 * STEPS), STEPS) if (i - int(0.25 * STEPS)) % 2]
    uncond_steps = [i for i in range(int(0.5 * STEPS), STEPS) if (i - int(0.5 * STEPS)) % 3]
    assert stats.uncond_reused == len(uncond_steps)
    assert stats.forwards == 2 * STEPS - len(uncond_steps)
    # one reuse per block for each DiT call on a reuse step (the batch of both branches, or cond alone)
    assert stats.attention_reused == len(attention_steps) * len(dit.blocks)


def test_a_skipped_step_moves_no_weights_under_block_swap(dit):
    from uniworld_core import place_dit

    swapped_dit = tiny_dit()
    placed = place_dit(swapped_dit, "cpu", blocks_to_swap=2, prefetch=0, latent_grid=(3, 4, 6))
    out, stats = _run(swapped_dit, "adaptive:0.5", steps=30)
    calls = placed.stats.loads // 2  # every DiT call loads both swapped blocks (prefetch 0)
    assert 0 < stats.skipped and calls < 30, "whole steps were skipped"
    assert torch.equal(out, _run(dit, "adaptive:0.5", steps=30)[0])


def test_progress_is_reported_on_every_step(dit):
    seen = []
    noise, start, context, negative = _inputs(dit)
    sample(dit, noise, start, context, negative,
           SamplerSettings(steps=STEPS, cache=CacheSettings.parse("adaptive:5+wan")),
           progress=lambda done, total, latents: seen.append(done))
    assert seen == list(range(1, STEPS + 1))


@pytest.mark.parametrize("spec,message", [("turbo", "cache policy 'turbo'"), ("adaptive:x", "policy\\[:number"),
                                          ("wan:0:1", "intervals >= 1"), ("wan:2:3:1.5", "fractions"),
                                          ("wan:2:3:0.1:0.2:9", "whole numbers"), ("wan:2.7:3", "whole numbers"),
                                          ("adaptive:0.1:0.2", "adaptive\\[:threshold\\]"), ("off:3", "adaptive")])
def test_bad_cache_settings_are_named(spec, message):
    from uniworld_core import InputError

    with pytest.raises(InputError, match=message):
        CacheSettings.parse(spec)



def test_a_wan_spec_may_give_its_intervals_and_starts():
    full = CacheSettings.parse("wan:3:5:0.1:0.25")
    assert (full.attention_interval, full.uncond_interval, full.attention_start, full.uncond_start) == (3, 5, 0.1, 0.25)
    two = CacheSettings.parse("wan:2:3")
    assert (two.attention_interval, two.uncond_interval) == (2, 3)
    assert (two.attention_start, two.uncond_start) == (CacheSettings.attention_start, CacheSettings.uncond_start)
    assert CacheSettings.parse("wan:4").uncond_interval == 4


def test_calibration_picks_the_fastest_schedule_that_keeps_the_quality(dit, tmp_path):
    """choose_wan_schedule on the tiny DiT: the chosen schedule really keeps the PSNR it reports."""
    from uniworld_core.sampling import choose_wan_schedule
    from uniworld_core.sampling.cache import WAN_CANDIDATES, psnr

    def render(settings):
        out, _ = _run(dit, settings)
        return (out.clamp(-3, 3) + 3) / 6  # latents as 0..1 "frames" for the PSNR

    chosen, rows = choose_wan_schedule(render, min_psnr=25.0, candidates=WAN_CANDIDATES[:4])
    assert len(rows) == 4 and chosen["schedule"] in WAN_CANDIDATES[:4]
    settings = CacheSettings(policies=("wan",), **chosen["schedule"])
    assert psnr(render(settings), render(CacheSettings())) >= 25.0
    path = tmp_path / "dit.safetensors"
    (tmp_path / "dit.safetensors.cache.json").write_text(__import__("json").dumps(chosen))
    assert CacheSettings.parse("wan").with_schedule(path).uncond_interval == chosen["schedule"]["uncond_interval"]
    given = CacheSettings.parse("wan:5:7").with_schedule(path)  # numbers the user gave win over the stored ones
    assert (given.attention_interval, given.uncond_interval) == (5, 7)
    with pytest.raises(Exception, match="no wan schedule keeping 1000"):
        choose_wan_schedule(render, min_psnr=1000.0, candidates=WAN_CANDIDATES[:1])
