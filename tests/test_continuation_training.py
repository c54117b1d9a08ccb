"""Training for continuation (issue #23): context frames enter as the sampler gives them, only new frames count."""

from __future__ import annotations

import pytest
import torch
from test_training import CFG, _padded, _train

from training.config import ConfigError, TrainConfig
from training.objective import ObjectiveConfig, _estimate, draw, flashi2v_loss
from uniworld_core.model import high_frequency
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.flashi2v import shift_latents
from uniworld_core.sampling.sampler import _step_inputs
from uniworld_core.sampling.schedule import timesteps_from_sigmas
from uniworld_core.weights import convert_file, quantize_file, trained_for_continuation

FRAMES = 5


def _clips(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Latents of n clips whose later frames follow from the earlier ones (a drift), and their features."""
    gen = torch.Generator().manual_seed(seed)
    first, step = torch.randn(n, 16, 1, 4, 4, generator=gen), 0.5 * torch.randn(n, 16, 1, 4, 4, generator=gen)
    latents = torch.cat([first + i * step for i in range(FRAMES)], dim=2)
    return _padded({"latents": latents, "features": torch.randn(n, 5, 12, generator=gen),
                    "empty_features": torch.zeros(n, 5, 12)})


def _dit() -> WanDiT:
    torch.manual_seed(0)
    return WanDiT(CFG).eval()


def _draws(k: int, offset: int, sigma: float = 0.6, seed: int = 1, frames: int = FRAMES) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"noise": torch.randn(1, 16, frames, 4, 4, generator=gen), "sigma": torch.tensor([sigma]),
            "ratio": torch.tensor([0.3]), "drop": torch.tensor([False]), "context_frames": torch.tensor(k),
            "offset": torch.tensor(offset)}


def _inputs_seen(dit, clean, context, draws, cfg: ObjectiveConfig = ObjectiveConfig()) -> dict:
    seen = {}
    hook = dit.register_forward_pre_hook(lambda module, args: seen.update(x=args[0], t=args[1]))
    loss = flashi2v_loss(dit, clean, context, context, cfg, draws=draws)
    hook.remove()
    return {**seen, "loss": loss}


@pytest.mark.parametrize("k,offset", [(1, 0), (2, 1), (3, 1)])
@torch.no_grad()
def test_a_continuation_batch_gives_the_dit_what_the_sampler_gives_it(k, offset):
    """Context frames clean and shifted at timestep 0, new frames noised at sigma: the sampler's `prefix`."""
    dit, data = _dit(), _clips(1)
    clean, context, draws = data["latents"], data["features"], _draws(k, offset)
    seen = _inputs_seen(dit, clean, context, draws)
    window, sigma = clean[:, :, offset:], draws["sigma"]
    noisy = sigma * draws["noise"][:, :, offset + k:] + (1 - sigma) * window[:, :, k:]
    t, x = _step_inputs(timesteps_from_sigmas(sigma), noisy, window[:, :, :k])
    x = shift_latents(x, dit.project_start(clean[:, :, :1]))
    assert seen["x"].shape[2] == FRAMES - offset
    torch.testing.assert_close(seen["x"], x.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["t"], t)


@torch.no_grad()
def test_only_the_new_frames_are_scored():
    dit, data = _dit(), _clips(1)
    clean, context, draws = data["latents"], data["features"], _draws(2, 0)
    base = flashi2v_loss(dit, clean, context, context, ObjectiveConfig(), draws=draws)
    other_noise = dict(draws, noise=draws["noise"].clone())
    other_noise["noise"][:, :, :2] += 5  # the context frames' noise is never used
    assert torch.equal(flashi2v_loss(dit, clean, context, context, ObjectiveConfig(), draws=other_noise), base)
    moved = clean.clone()
    moved[:, :, 1] += 1  # but the context itself is seen
    assert not torch.equal(flashi2v_loss(dit, moved, context, context, ObjectiveConfig(), draws=draws), base)


def test_draws_mix_continuations_into_plain_batches_and_keep_the_plain_stream():
    shape, plain = (2, 16, FRAMES, 4, 4), ObjectiveConfig()
    first = draw(shape, plain, torch.Generator().manual_seed(3))
    mixed = [draw(shape, ObjectiveConfig(continuation=0.5, max_context=3), g)
             for g in [torch.Generator().manual_seed(s) for s in range(200)]]
    assert "context_frames" not in first
    same_seed = draw(shape, ObjectiveConfig(continuation=0.5), torch.Generator().manual_seed(3))
    assert torch.equal(same_seed["noise"], first["noise"]) and torch.equal(same_seed["sigma"], first["sigma"])
    ks = [int(d["context_frames"]) for d in mixed]
    assert 0.3 < ks.count(0) / len(ks) < 0.7 and set(ks) == {0, 1, 2, 3}
    assert all(int(d["offset"]) + int(d["context_frames"]) < FRAMES for d in mixed)  # a new frame is left
    assert all(int(d["offset"]) == 0 for d in mixed if int(d["context_frames"]) == 0)


@pytest.mark.parametrize("field,value", [("continuation", 1.5), ("continuation", -0.1), ("max_context", 0),
                                         ("context_estimate", 1.0), ("context_estimate", -0.1)])
def test_continuation_settings_are_checked(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_training_with_continuation_learns_and_says_so_in_the_export(tmp_path):
    data = _clips(4)
    cfg = TrainConfig(mode="full", steps=120, lr=3e-3, text_drop=0.0, weight_decay=0.0, seed=1, continuation=0.5,
                      max_context=3)
    start, end, trainer = _train(_dit().train(), cfg, data)
    assert end < 0.7 * start, (start, end)
    assert trained_for_continuation(trainer.export(tmp_path / "on"))
    plain = TrainConfig(mode="full", steps=1, seed=1)
    _, _, other = _train(_dit().train(), plain, data)
    assert not trained_for_continuation(other.export(tmp_path / "off"))
    # converted or quantised, the file still says so (else `--continuation auto` would pick the fallback)
    exported = tmp_path / "on" / "dit.safetensors"
    copies = [convert_file(exported, tmp_path / "bf16.safetensors", torch.bfloat16),
              quantize_file(exported, tmp_path / "q8.gguf", "Q8_0"),
              quantize_file(exported, tmp_path / "fp8.safetensors", "fp8_e4m3fn")]
    assert all(trained_for_continuation(path) for path in copies)
    plain_copy = quantize_file(tmp_path / "off" / "dit.safetensors", tmp_path / "plain.gguf", "Q8_0")
    assert not trained_for_continuation(plain_copy)


@torch.no_grad()
def test_context_noise_mixes_the_context_slots_noise_into_the_context():
    dit, data = _dit(), _clips(1)
    clean, context = data["latents"], data["features"]
    draws = {**_draws(2, 0), "context_noise": torch.tensor(0.25)}
    seen = _inputs_seen(dit, clean, context, draws)
    proj = dit.project_start(clean[:, :, :1])
    expected = 0.75 * clean[:, :, :2] + 0.25 * draws["noise"][:, :, :2] - proj
    torch.testing.assert_close(seen["x"][:, :, :2], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(seen["t"][:, :2], torch.zeros(1, 2))  # still clean context as far as time goes
    drawn = [draw((1, 16, FRAMES, 4, 4), ObjectiveConfig(continuation=1.0, context_noise=0.1),
                  torch.Generator().manual_seed(s))["context_noise"] for s in range(50)]
    assert all(0 <= float(d) <= 0.1 for d in drawn) and len({float(d) for d in drawn}) > 40


@torch.no_grad()
def test_the_estimate_inverts_the_flashi2v_pair():
    """A DiT that predicts the true velocity (noise - clean) gives back the clean latents exactly."""
    gen = torch.Generator().manual_seed(2)
    clean, noise, proj = (torch.randn(1, 16, 2, 4, 4, generator=gen) for _ in range(3))
    seen = {}

    def oracle(x, t, context, features):
        seen.update(t=t)
        return noise - clean

    estimate = _estimate(oracle, clean, noise, 0.4, proj, torch.zeros(1, 5, 12), torch.zeros(1, 16, 2, 4, 4))
    torch.testing.assert_close(estimate, clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["t"], timesteps_from_sigmas(torch.tensor([0.4, 0.4]))[None])


@torch.no_grad()
def test_context_estimate_gives_the_dit_its_own_estimate_of_the_context():
    """The context slots hold the DiT's one-step estimate of the clean context from noise level e (its own
    noise), still at timestep 0; the new frames are untouched."""
    dit, data = _dit(), _clips(1)
    clean, context = data["latents"], data["features"]
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(9))
    draws = {**_draws(2, 0), "context_estimate": torch.tensor(0.5), "estimate_noise": noise}
    seen = _inputs_seen(dit, clean, context, draws)  # the hook keeps the last call: the scored one
    plain = _inputs_seen(dit, clean, context, _draws(2, 0))
    proj = dit.project_start(clean[:, :, :1])
    features = high_frequency(clean[:, :, :1], torch.tensor([0.3])).expand(-1, -1, 2, -1, -1)
    own = _estimate(dit, clean[:, :, :2], noise, 0.5, proj, context, features)
    torch.testing.assert_close(seen["x"][:, :, :2], own - proj, rtol=1e-5, atol=1e-5)
    assert (own - clean[:, :, :2]).abs().mean() > 0.05  # an untrained DiT's estimate is not the clean context
    torch.testing.assert_close(seen["x"][:, :, 2:], plain["x"][:, :, 2:])
    assert torch.equal(seen["t"], plain["t"])
    cfg = ObjectiveConfig(continuation=1.0, context_estimate=0.6)
    drawn = [draw((1, 16, FRAMES, 4, 4), cfg, torch.Generator().manual_seed(s)) for s in range(50)]
    plain_drawn = [draw((1, 16, FRAMES, 4, 4), ObjectiveConfig(continuation=1.0), torch.Generator().manual_seed(s))
                   for s in range(50)]
    assert all(0 <= float(d["context_estimate"]) <= 0.6 for d in drawn)
    assert len({float(d["context_estimate"]) for d in drawn}) > 40
    assert all(d["estimate_noise"].shape[2] == max(int(d["context_frames"]), 1) for d in drawn)
    halves = [draw((2, 16, FRAMES, 4, 4), cfg, torch.Generator().manual_seed(4), part) for part in
              (slice(None), slice(0, 1), slice(1, 2))]  # data-parallel processes each keep their samples' noise
    split = torch.cat([halves[1]["estimate_noise"], halves[2]["estimate_noise"]])
    assert torch.equal(split, halves[0]["estimate_noise"])
    assert halves[1]["estimate_noise"].shape[0] == 1
    assert all(torch.equal(a["noise"], b["noise"]) and torch.equal(a["context_frames"], b["context_frames"])
               for a, b in zip(drawn, plain_drawn))  # drawn last: the rest of the stream is unchanged


def _long_clip(frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 16, frames, 4, 4, generator=gen)
    return latents, _padded({"features": torch.randn(1, 5, 12, generator=gen)})["features"]


@pytest.mark.parametrize("k,offset", [(1, 1), (2, 3), (3, 4)])
@torch.no_grad()
def test_a_window_of_a_long_clip_is_what_an_inference_continuation_sees(k, offset):
    """With `window`, a continuation of a long clip sees `window` frames from `offset` on (the sampler's prefix
    of k frames and window - k noisy ones), conditioned on the clip's first frame, as every later chunk is."""
    dit, (clean, context) = _dit(), _long_clip(9)
    draws, cfg = _draws(k, offset, frames=9), ObjectiveConfig(window=5)
    seen = _inputs_seen(dit, clean, context, draws, cfg)
    window, sigma = clean[:, :, offset:offset + 5], draws["sigma"]
    noisy = sigma * draws["noise"][:, :, offset + k:offset + 5] + (1 - sigma) * window[:, :, k:]
    t, x = _step_inputs(timesteps_from_sigmas(sigma), noisy, window[:, :, :k])
    x = shift_latents(x, dit.project_start(clean[:, :, :1]))
    assert seen["x"].shape[2] == 5
    torch.testing.assert_close(seen["x"], x.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["t"], t)
    after = clean.clone()
    after[:, :, offset + 5:] += 3  # frames past the window are never seen
    assert torch.equal(flashi2v_loss(dit, after, context, context, cfg, draws=draws), seen["loss"])


@torch.no_grad()
def test_an_i2sv_batch_of_a_long_clip_is_its_first_window():
    dit, (clean, context) = _dit(), _long_clip(9)
    seen = _inputs_seen(dit, clean, context, _draws(0, 0, frames=9), ObjectiveConfig(window=5))
    plain = _inputs_seen(dit, clean[:, :, :5], context, _draws(0, 0, frames=9) | {
        "noise": _draws(0, 0, frames=9)["noise"][:, :, :5]})
    assert seen["x"].shape[2] == 5
    torch.testing.assert_close(seen["x"], plain["x"])
    torch.testing.assert_close(seen["loss"], plain["loss"])


def test_window_draws_start_continuations_past_the_first_frame_and_fit_the_clip():
    frames, window = 11, 5
    drawn = [draw((2, 16, frames, 4, 4), ObjectiveConfig(continuation=0.5, max_context=3, window=window), g)
             for g in [torch.Generator().manual_seed(s) for s in range(300)]]
    pairs = [(int(d["context_frames"]), int(d["offset"])) for d in drawn]
    continued = [(k, o) for k, o in pairs if k]
    assert {k for k, _ in continued} == {1, 2, 3}
    assert {o for _, o in continued} == set(range(1, frames - window + 1))  # every mid-clip window, none at 0
    assert all(o == 0 for k, o in pairs if not k)
    # clips no longer than the window draw exactly as without one, stream and all
    short = (2, 16, FRAMES, 4, 4)
    with_window, without = (ObjectiveConfig(continuation=0.5, max_context=3, window=w) for w in (FRAMES, 0))
    for seed in range(20):
        a = draw(short, with_window, torch.Generator().manual_seed(seed))
        b = draw(short, without, torch.Generator().manual_seed(seed))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_a_one_frame_window_is_refused():
    with pytest.raises(ConfigError, match="window"):
        TrainConfig(window=1)
