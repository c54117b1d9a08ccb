"""Long videos: run sizes, continuation with clean context frames, streaming decode, the chained fallback."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_dit

from uniworld_core import InputError
from uniworld_core.model import VAEConfig, WanVAE
from uniworld_core.model.vae import StreamingDecoder
from uniworld_core.sampling import SamplerSettings, VideoSettings, encode_start, generate_latents
from uniworld_core.sampling.continuation import (
    ContinuationSettings,
    JoinSmoother,
    chunk_sizes,
    continue_latents,
    crossfade,
    extend_latents,
    frame_index,
    generate_long,
    match_colours,
    match_statistics,
    smooth_joins,
)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8)).eval()
    return tiny_dit(), vae


def test_runs_are_the_first_i2sv_run_then_continuations():
    settings = ContinuationSettings(new_frames=9, first_frames=49)
    assert chunk_sizes(49, settings) == [13]
    assert chunk_sizes(49 + 2 * 36, settings) == [13, 9, 9]
    assert chunk_sizes(65, settings) == [13, 4]
    assert chunk_sizes(17, settings) == [5]  # shorter than one run: one run
    with pytest.raises(InputError, match="4k\\+1"):
        chunk_sizes(50, settings)


def test_streaming_decode_equals_decoding_the_whole_sequence(models):
    _, vae = models
    latents = torch.randn(1, 16, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    whole = vae.decode(latents)
    stream = StreamingDecoder(vae)
    pieces = torch.cat([stream(latents[:, :, :2]), stream(latents[:, :, 2:3]), stream(latents[:, :, 3:])], dim=2)
    assert pieces.shape == whole.shape
    assert torch.allclose(pieces, whole, atol=1e-6)


def test_a_continuation_sees_its_context(models):
    dit, vae = models
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(2))
    start = encode_start(vae, image, 32, 32, 0.1)
    gen = torch.Generator().manual_seed(3)
    video = torch.randn(1, 16, 5, 4, 4, generator=gen)
    context, negative = torch.randn(1, 5, dit.cfg.text_dim, generator=gen), torch.randn(1, 5, dit.cfg.text_dim)
    sampler = SamplerSettings(steps=3, shift=3.0, guidance_scale=2.0)
    new = continue_latents(dit, start, video, context, negative, sampler, 3, 2, seed=7)
    again = continue_latents(dit, start, video, context, negative, sampler, 3, 2, seed=7)
    other = continue_latents(dit, start, video + 1.0, context, negative, sampler, 3, 2, seed=7)
    older = continue_latents(dit, start, torch.cat([video[:, :, :1] + 5.0, video], dim=2), context, negative,
                             sampler, 3, 2, seed=7)
    assert new.shape == (1, 16, 3, 4, 4)
    assert torch.equal(new, again)
    assert not torch.allclose(new, other, atol=1e-4), "the context frames changed nothing"
    assert torch.equal(new, older), "frames outside the context window must not matter"


@pytest.mark.parametrize("fallback", [False, True], ids=["continuation", "fallback"])
def test_generate_long_yields_every_frame_chunk_by_chunk(models, fallback):
    dit, vae = models
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(4))
    start = encode_start(vae, image, 32, 32, 0.1)
    context = torch.randn(1, 5, dit.cfg.text_dim, generator=torch.Generator().manual_seed(5))
    settings = ContinuationSettings(new_frames=2, context_frames=2, first_frames=9, fallback=fallback)
    video = VideoSettings(width=32, height=32, num_frames=25, seed=1)
    chunks = list(generate_long(dit, vae, start, context, None, video, SamplerSettings(steps=2, shift=3.0,
                                                                                      guidance_scale=1.0), settings))
    assert [c.shape[0] for c in chunks] == [9, 8, 8]  # 25 frames: 3 latent frames, then 2 + 2
    assert all(c.shape[1:] == (32, 32, 3) and 0 <= c.min() and c.max() <= 1 for c in chunks)


def test_colour_matching_and_crossfade():
    gen = torch.Generator().manual_seed(6)
    reference = torch.rand(8, 8, 3, generator=gen) * 0.5
    frames = torch.rand(4, 8, 8, 3, generator=gen) * 0.3 + 0.6
    matched = match_colours(frames, reference)
    assert torch.allclose(matched[0].mean(dim=(0, 1)), reference.mean(dim=(0, 1)), atol=0.02)
    faded = crossfade(reference, frames, 2)
    assert torch.allclose(faded[0], reference * 2 / 3 + frames[0] / 3)
    assert torch.equal(faded[2:], frames[2:])


def test_continued_latents_take_the_statistics_of_their_context_window():
    gen = torch.Generator().manual_seed(8)
    window = torch.randn(1, 16, 2, 4, 4, generator=gen) * torch.linspace(0.5, 2, 16)[:, None, None, None] + 3
    new = torch.randn(1, 16, 3, 4, 4, generator=gen) * 0.7 - 1
    matched = match_statistics(new, window)
    dims = (0, 2, 3, 4)
    assert torch.allclose(matched.mean(dim=dims), window.mean(dim=dims), atol=1e-5)
    assert torch.allclose(matched.std(dim=dims), window.std(dim=dims), atol=1e-5)
    # a per-channel affine map: each channel's pattern is kept
    for channel in range(16):
        assert torch.corrcoef(torch.stack([matched[0, channel].flatten(), new[0, channel].flatten()]))[0, 1] > 0.9999


def test_long_videos_match_their_chunks_unless_asked_not_to(models):
    dit, vae = models
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(4))
    start = encode_start(vae, image, 32, 32, 0.1)
    context = torch.randn(1, 5, dit.cfg.text_dim, generator=torch.Generator().manual_seed(5))
    video = VideoSettings(width=32, height=32, num_frames=25, seed=1)
    sampler = SamplerSettings(steps=2, shift=3.0, guidance_scale=1.0)
    runs = {match: torch.cat(list(generate_long(dit, vae, start, context, None, video, sampler,
                                                ContinuationSettings(new_frames=2, context_frames=2, first_frames=9,
                                                                     match=match))))
            for match in (True, False)}
    assert torch.equal(runs[True][:9], runs[False][:9]), "the first run is not a continuation"
    assert not torch.allclose(runs[True][9:], runs[False][9:], atol=1e-3)


@pytest.mark.parametrize("mode", ["on", "fallback", "on --no-match"])
def test_the_main_job_makes_any_length(tmp_path, capsys, mode):
    from uniworld_core.__main__ import main
    from uniworld_core.media import read_webp

    out = tmp_path / "long.webp"
    assert main(["generate", "--preset", "tiny", "--frames", "41", "--steps", "4", "--continuation", *mode.split(),
                 "--new-frames", "3", "--context-frames", "2", "--cache", "adaptive:5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chunk 3: 41/41 frames" in printed
    assert read_webp(out).shape[0] == 41
    # the cache's tally covers every run: 3 runs x 4 steps x 2 branches
    assert "(" in printed and "/24 DiT forwards run" in printed, printed[-800:]


def test_run_frames_makes_a_long_video_one_run(tmp_path, capsys):
    from uniworld_core.__main__ import main
    from uniworld_core.media import read_webp

    out = tmp_path / "one.webp"
    assert main(["generate", "--preset", "tiny", "--frames", "25", "--run-frames", "25", "--steps", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chunk" not in printed and read_webp(out).shape[0] == 25


def test_a_too_long_or_badly_split_video_is_refused_up_front(tmp_path, capsys):
    from uniworld_core.__main__ import main

    assert main(["generate", "--preset", "tiny", "--frames", "100001", "--out", str(tmp_path / "x.webp")]) == 2
    assert "--frames 100001; expected 5 to 4097" in capsys.readouterr().err
    assert main(["generate", "--preset", "tiny", "--frames", "41", "--new-frames", "0",
                 "--out", str(tmp_path / "x.webp")]) == 2
    assert "--new-frames 0" in capsys.readouterr().err


def test_the_long_video_card_section_reads_the_bars_from_the_numbers():
    from bench.bench_long_video import card_section

    def way(score, drift, join, seconds=(1.0, 0.8, 0.8, 0.85, 0.8), rss=(500, 505, 506, 506, 507)):
        return {"object_score": list(score), "centroid_error_px": [1.0] * 5, "colour_drift_255": list(drift),
                "join_discontinuity": join, "seconds_per_chunk": list(seconds), "peak_rss_mib": list(rss)}

    good = {"continuation": way([0.5, 0.45, 0.42, 0.41, 0.4], [0, 1, 2, 2.9, 3.5], 1.4),
            "fallback": way([0.5] * 5, [0, 5, 9, 12, 20], 1.5), "naive chaining": way([0.5] * 5, [0, 9, 19, 30, 40], 9),
            "truth": way([1] * 5, [0, 0.5, 0.6, 0.7, 0.2], 0.9)}
    section = card_section(good, 53, 3)
    assert all(section["bars_met"].values()) and len(section["bars_met"]) == 5
    assert set(section["results"]) == {"continuation", "fallback", "naive chaining"}
    assert "seconds_per_chunk" not in section["baselines"]["truth"]
    bad = {**good, "continuation": way([0.5, 0.3, 0.3, 0.39, 0.3], [0, 1, 2, 3.1, 3], 1.6,
                                       rss=(500, 505, 600, 506, 507))}
    assert not any(v for k, v in card_section(bad, 53, 3)["bars_met"].items() if "fallback" not in k)
    negative_first = {**good, "continuation": way([-0.1, -0.5, -0.3, -0.05, 0], [0] * 5, 1.0)}
    assert not card_section(negative_first, 53, 3)["bars_met"]["4th chunk object score >= 0.8x the first's"]


def test_the_long_video_object_score_is_pooled_over_clips_as_the_miniature_card_pools_it():
    from bench.bench_long_video import summarise_chunks

    def chunk(error, absent, centroid=2.0, drift=1.0):
        return {"object_error": error, "absent_error": absent, "centroid_error_px": centroid, "colour_drift_255": drift}

    # clips 1 and 3: objects that stand out, half their error removed; clip 2: faint objects, made 3x worse
    rows = [[chunk(50.0, 100.0, 1.0), chunk(0.0, 0.0, None, 2.0)], [chunk(3.0, 1.0, 9.0), chunk(0.0, 0.0, None, 4.0)],
            [chunk(50.0, 100.0, 2.0), chunk(0.0, 0.0, None, 3.0)]]
    out = summarise_chunks(rows, 2)
    assert out["object_score"][0] == pytest.approx(1 - 103 / 201)  # a mean of ratios would read (0.5 - 2 + 0.5) / 3
    assert out["object_score"][1] is None  # every object hidden: no score
    assert out["centroid_error_px"] == [2.0, None] and out["colour_drift_255"] == [1.0, 3.0]  # the median


@pytest.mark.parametrize("match", [True, False])
def test_later_chunks_keep_the_first_chunks_colour_and_fade_in(match):
    gen = torch.Generator().manual_seed(9)
    first = torch.rand(5, 8, 8, 3, generator=gen) * 0.4 + 0.1
    later = torch.rand(6, 8, 8, 3, generator=gen) * 0.4 + 0.4
    smoother = JoinSmoother(fade=2)
    assert torch.equal(smoother(first, match), first)
    out = smoother(later, match)
    shifted = later - later.mean(dim=(0, 1, 2)) + first.mean(dim=(0, 1, 2)) if match else later
    assert torch.allclose(out[2:], shifted[2:], atol=1e-6)
    assert torch.allclose(out[0], first[-1] * 2 / 3 + shifted[0] / 3, atol=1e-6)
    assert torch.allclose(out[1], first[-1] / 3 + shifted[1] * 2 / 3, atol=1e-6)
    if match:  # the new chunk's mean colour, away from the fade, is the first chunk's
        assert torch.allclose(out[2:].mean(dim=(0, 1, 2)), first.mean(dim=(0, 1, 2)), atol=0.02)
    assert torch.equal(smooth_joins(torch.cat([first, later]), [(5, match)]), torch.cat([first, out]))


def test_latent_frames_map_to_the_frames_they_decode_to():
    assert [frame_index(t, [7]) for t in (1, 3, 6)] == [1, 9, 21]
    # a fallback run after it: its first latent frame is the start frame, dropped when decoded
    assert [frame_index(t, [3, 4]) for t in (4, 6)] == [9, 17]
    for bad in (0, 3, 7):
        with pytest.raises(InputError, match="a latent frame inside a run"):
            frame_index(bad, [3, 4])


def test_extending_latents_then_decoding_equals_generate_long(models):
    """The node path (Extend Video, then VAE Decode's smoothing) makes the frames of the streaming API."""
    dit, vae = models
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(4))
    start = encode_start(vae, image, 32, 32, 0.1)
    context = torch.randn(1, 5, dit.cfg.text_dim, generator=torch.Generator().manual_seed(5))
    sampler = SamplerSettings(steps=2, shift=3.0, guidance_scale=1.0)
    settings = ContinuationSettings(new_frames=2, context_frames=2, first_frames=9)
    video = VideoSettings(width=32, height=32, num_frames=25, seed=1)
    streamed = torch.cat(list(generate_long(dit, vae, start, context, None, video, sampler, settings)))
    latents = generate_latents(dit, vae, None, context, None, VideoSettings(width=32, height=32, num_frames=9, seed=1),
                               sampler, start=start)
    chunks, joins = [latents.shape[2]], []
    for index in (1, 2):
        joins.append((frame_index(latents.shape[2], [latents.shape[2] + 2]), True))
        latents, chunks = extend_latents(dit, vae, latents, chunks, start, context, None, sampler, settings, 2,
                                         seed=1 + index)
    frames = vae.decode(latents).clamp(-1, 1)[0].permute(1, 2, 3, 0) * 0.5 + 0.5
    assert chunks == [7] and [at for at, _ in joins] == [9, 17]
    assert torch.allclose(smooth_joins(frames, joins), streamed, atol=1e-5)


def test_a_vae_of_another_latent_width_is_refused_by_the_dit(models):
    dit, _ = models
    vae = WanVAE(VAEConfig(base_dim=8, z_dim=32)).eval()
    start = encode_start(vae, torch.rand(32, 32, 3), 32, 32, 0.1)
    context = torch.randn(1, 5, dit.cfg.text_dim)
    with pytest.raises(InputError, match="32 channels for a DiT that takes 16.*Load the matching VAE"):
        generate_latents(dit, vae, None, context, None, VideoSettings(width=32, height=32, num_frames=5, seed=1),
                         SamplerSettings(steps=1, shift=3.0, guidance_scale=1.0), start=start)
