"""Per-frame timesteps in the DiT (continuation: clean context frames at t = 0, new frames at the sampling time)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import dit_inputs, tiny_dit

from uniworld_core import InputError


def test_equal_per_frame_timesteps_are_the_single_timestep_path():
    dit = tiny_dit()
    x, t, context, features = dit_inputs()
    with torch.no_grad():
        single = dit(x, t, context, features)
        per_frame = dit(x, t.expand(1, x.shape[2]).clone(), context, features)
    assert torch.allclose(per_frame, single, atol=1e-6, rtol=1e-5)


def test_each_frame_takes_its_own_timestep():
    """A frame's output follows its own timestep: changing frame 1's leaves its modulation to frame 1."""
    dit = tiny_dit()
    x, _, context, features = dit_inputs()
    with torch.no_grad():
        clean_first = dit(x, torch.tensor([[0.0, 700.0]]), context, features)
        all_noisy = dit(x, torch.tensor([[700.0, 700.0]]), context, features)
        single_clean = dit(x, torch.tensor([0.0]), context, features)
    assert not torch.allclose(clean_first, all_noisy, atol=1e-4)
    assert not torch.allclose(clean_first, single_clean, atol=1e-4)  # frame 1 is not at t = 0


def test_per_frame_timesteps_of_the_wrong_shape_are_refused():
    dit = tiny_dit()
    x, _, context, features = dit_inputs()
    with pytest.raises(InputError, match="one per latent frame"):
        dit(x, torch.zeros(1, x.shape[2] + 1), context, features)
