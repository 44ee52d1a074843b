"""Training-time re-encodings (models/video/degrade.py): real codecs, frame for frame, refusing bad specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalens.data.synthetic_video import synthetic_clip
from anomalens.errors import ConfigError
from anomalens.models.video.degrade import jpeg_degrade, make_degradation

pytest.importorskip("av")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    clip, _ = synthetic_clip(2, n_frames=12, size=(96, 128))
    return torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("spec", ["h264:35", "jpeg:20", "scale:0.5"])
def test_each_degradation_keeps_frames_and_changes_detail_not_content(frames, spec):
    degrade = make_degradation(spec)
    out = torch.cat([degrade(frames[i : i + 4]) for i in range(0, len(frames), 4)])  # streamed in batches
    assert out.shape == frames.shape and out.dtype == torch.uint8
    difference = (out.float() - frames.float()).abs()
    assert 0.5 < difference.mean() < 12  # visibly degraded ...
    assert (out.float().mean((0, 2, 3)) - frames.float().mean((0, 2, 3))).abs().max() < 3  # ... same colours


@pytest.mark.parametrize("spec", ["h264:30", "mpeg4:12"])
def test_video_codecs_keep_their_state_across_batches_and_odd_sizes(frames, spec):
    codec = make_degradation(spec)
    first, second = codec(frames[:3, :, :95, :127]), codec(frames[3:6, :, :95, :127])
    assert first.shape == (3, 3, 95, 127) and second.shape == (3, 3, 95, 127)
    assert codec._count == 6  # one encoder for the whole clip


@pytest.mark.parametrize("spec", ["h264", "jpeg:0", "scale:2", "blur:1", "h264:x"])
def test_bad_specs_are_refused_by_name(spec):
    with pytest.raises(ConfigError, match="training_degradations"):
        make_degradation(spec)


def test_noise_is_seeded_per_clip_and_a_chain_applies_its_steps_in_order(frames):
    batch = frames[:4]
    first, again, other = (make_degradation("noise:3", seed=s)(batch) for s in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)  # the same clip, the same noise
    assert 2.5 < float((first.float() - batch.float()).std()) < 3.5  # three grey levels
    noisy_then_jpeg = make_degradation("noise:3+jpeg:50", seed=1)(batch)
    assert torch.equal(noisy_then_jpeg, jpeg_degrade(first, 50))


@pytest.mark.parametrize("spec, part", [("noise:3+blur:1", "'blur:1' in 'noise:3\\+blur:1'"), ("noise:0", "'noise:0'"),
                                        ("jpeg:50+noise:x", "'noise:x' needs a number")])
def test_a_bad_step_of_a_chain_is_named(spec, part):
    with pytest.raises(ConfigError, match=f"motion_codec_memory: .*{part}"):
        make_degradation(spec, "motion_codec_memory")
