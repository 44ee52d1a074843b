"""The same seed gives the same encoded frames on any machine: encoders that write other frames with another thread
count (libx264, MPEG-4 Part 2) run a fixed count, whatever CPUs the process may use, and libx264 runs without the
AVX-512 code that let unwritten memory into its bitstream.

The thread checks encode in a child process allowed one CPU (``os.sched_setaffinity``) and compare the decoded frames
with the same encoding made where the process may use every CPU; the memory check encodes under three fill bytes. Before the counts were fixed, FFmpeg chose them from
the CPUs available, and both the benchmarks' encodings and the video model's codec memory came out otherwise.
"""

from __future__ import annotations

import textwrap

import pytest

from _one_cpu import run_script, skip_unless_comparable

pytest.importorskip("av")

skip_unless_comparable()

# Frames of the project's conveyor, big enough that slices and frame threads change what the encoders write.
_COMMON = textwrap.dedent("""
    import hashlib, os, sys, tempfile
    from pathlib import Path
    import numpy as np, torch
    from anomalens.data.synthetic_video import synthetic_clip
    frames = synthetic_clip(3, n_frames=20, size=(240, 320))[0]
""")

_ENCODE_VIDEO = _COMMON + textwrap.dedent("""
    import av
    from anomalens.data.video_io import encode_video
    codec, pix_fmt, container, options = sys.argv[1], sys.argv[2], sys.argv[3], dict(a.split("=") for a in sys.argv[4:])
    digest = hashlib.md5()
    with tempfile.TemporaryDirectory() as folder:
        path = encode_video(Path(folder) / f"clip.{container}", frames, 10.0, codec=codec, pix_fmt=pix_fmt,
                            container=container, options=options)
        with av.open(str(path)) as video:
            for frame in video.decode(video=0):
                digest.update(frame.to_ndarray(format="rgb24").tobytes())
    print(digest.hexdigest())
""")

_DEGRADE = _COMMON + textwrap.dedent("""
    from anomalens.models.video.degrade import make_degradation
    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    print(hashlib.md5(make_degradation(sys.argv[1])(batch).numpy().tobytes()).hexdigest())
""")


@pytest.mark.parametrize("codec, pix_fmt, container, options", [
    ("libx264", "yuv420p", "mp4", ["crf=23", "preset=veryfast"]),
    ("mpeg4", "yuv420p", "avi", ["qmin=8", "qmax=8"]),
])
def test_encode_video_writes_the_same_frames_whatever_cpus_the_process_may_use(codec, pix_fmt, container, options):
    args = [codec, pix_fmt, container, *options]
    assert run_script(_ENCODE_VIDEO, args, one_cpu=True) == run_script(_ENCODE_VIDEO, args, one_cpu=False)


@pytest.mark.parametrize("spec", ["h264:35", "mpeg4:12"])
def test_codec_memory_degradations_do_not_depend_on_the_cpus_either(spec):
    assert run_script(_DEGRADE, [spec], one_cpu=True) == run_script(_DEGRADE, [spec], one_cpu=False)


@pytest.mark.parametrize("options", [["crf=23", "preset=veryfast"], ["crf=35", "preset=faster"]])
def test_libx264_writes_the_same_frames_whatever_the_memory_held_before(options):
    # MALLOC_PERTURB_ fills memory that malloc hands out (and frees) with a byte of its own: an encoder that reads
    # memory it never wrote writes other frames under another byte. libx264's AVX-512 code did, on these frames.
    args = ["libx264", "yuv420p", "mp4", *options]
    digests = {run_script(_ENCODE_VIDEO, args, one_cpu=False, env={"MALLOC_PERTURB_": str(byte)}) for byte in (0, 77, 165)}
    assert len(digests) == 1


def test_stable_encoder_options_keep_the_callers_choices():
    from anomalens.data import video_io

    options = {"crf": "23", "x264-params": "asm=sse4"}
    assert video_io.stable_encoder_options("libx264", options) == options  # the caller's own asm wins
    assert video_io.stable_encoder_options("mpeg4", {"qmin": "8"}) == {"qmin": "8"}
    if video_io._has_avx512():
        assert video_io.stable_encoder_options("libx264", {"x264-params": "ref=2"})["x264-params"] == "ref=2:asm=avx2"
