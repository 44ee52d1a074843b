"""Export of the video models: the torch-free runtime gives ``analyze-video``'s per-frame scores, verdicts and events.

On a small synthetic conveyor (data/synthetic_video.py): the default model ``stfeatures`` (appearance and motion
graphs, optical flow between them in the runtime) is scored with torch made unimportable; ``convlstm`` (one
window graph, windows averaged in the runtime) in the same process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY as CATEGORY
from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.errors import CheckpointError, ConfigError
from anomalens.export import export_model
from anomalens.inference import Inferencer, VideoInferencer
from anomalens.inference.bundle import BUNDLE_VERSION
from anomalens.workflows.predict import analyze_video
from anomalens.workflows.train import train_video_model

SIZE = (64, 96)
# fp32 graphs (distances, sorted medians, flow views) add up in another order than torch: a thousandth of the
# normal scores' spread is far below any verdict and above that rounding (1e-4 failed once at 1.1e-4)
PARITY = 1e-3

RUNTIME = r"""
import json, sys
sys.modules["torch"] = None          # any `import torch` now raises ImportError
from anomalens.inference import VideoInferencer
result = VideoInferencer.load(sys.argv[1]).predict_video(sys.argv[2], memory_limit=0)   # maps on disk: events read them there
print(json.dumps({**result.to_dict(), "maps": type(result.maps).__name__,
                  "library_modules": sorted(m for m in sys.modules if m.startswith(("anomalens.models", "anomalens.workflows")))}))
"""


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory) -> Path:
    return make_synthetic_video_dataset(tmp_path_factory.mktemp("conveyor"), n_train=2, n_test=1, n_frames=24, size=SIZE)


def _test_video(root: Path, kind: str = "foreign_object") -> Path:
    return root / CATEGORY / "test" / kind / "test_000.mp4"


def _train(root: Path, model: str, tmp: Path, **options) -> Path:
    return train_video_model(root, CATEGORY, model, tmp / "results", image_size=SIZE, device="cpu", run_name=model, **options).run_dir


def test_default_video_model_runs_without_torch_and_matches_analyze_video(conveyor, tmp_path):
    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000)
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    meta = json.loads((bundle.folder / "bundle.json").read_text())
    assert meta["version"] == BUNDLE_VERSION and meta["model"]["kind"] == "video" and set(meta["graphs"]) == {"appearance", "motion"}
    assert any("optical flow" in step for step in meta["postprocessing"]["outside_graph"])
    check = bundle.check  # checkpoint and bundle on the run's held-out clip, measured at export
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY

    video = _test_video(conveyor)
    expected = analyze_video(run, video, tmp_path / "analysis", device="cpu")
    src = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run([sys.executable, "-c", RUNTIME, str(bundle.folder), str(video)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(src)}, timeout=600)  # generous: a loaded 2-core machine
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["library_modules"] == ["anomalens.models", "anomalens.models.schema"]  # the schema's checks only
    assert got["maps"] == "memmap"  # the spill to disk runs without torch too
    scale = VideoInferencer.load(bundle.folder).calibration.scale  # differences in units of the validation spread
    assert len(got["scores"]) == len(expected.scores) == 24
    assert np.abs(np.array(got["scores"]) - expected.scores).max() <= PARITY * scale
    assert got["anomalous"] == expected.anomalous.tolist()
    assert any(got["anomalous"])  # the foreign object is found: the comparison covers verdicts both ways
    assert [(e["start_frame"], e["end_frame"], e["peak_frame"], e.get("main_cue")) for e in got["events"]] == \
        [(e.start_frame, e.end_frame, e.peak_frame, e.main_cue) for e in expected.events]
    # and where, in the video's own pixels
    assert meta["video"]["map_places_events"] is True
    assert [(e["peak_regions"], e["image_height"], e["image_width"]) for e in got["events"]] == \
        [(e.peak_regions, e.image_height, e.image_width) for e in expected.events]
    assert all(e["peak_regions"] for e in got["events"])
    cues = {name: np.array(values) for name, values in got["cues"].items()}
    assert np.allclose(cues["appearance"] + cues["motion"], got["scores"], atol=1e-5)

    # the same video said to run at half the training rate: the runtime scales its flow as the library does
    from anomalens.data.video_io import open_clip
    from anomalens.models.base import load_detector

    assert meta["video"]["training_fps"] == 10.0  # the synthetic conveyor's rate
    detector = load_detector(run / "model", kind="video")
    library = detector.predict_clip(open_clip(video, detector.preprocessing, fps=5.0), views=False)
    halved = VideoInferencer.load(bundle.folder).predict_video(video, fps=5.0)
    assert np.abs(halved.scores - library.scores).max() <= PARITY * scale
    assert np.abs(halved.cues["motion"] - np.array(got["cues"]["motion"])).max() > 0.1  # the rescaling changed them

    # a raw MJPEG stream states no rate (FFmpeg's 25 fps is a guess): the runtime, like the library, measures its motion
    # per frame, as frames given with no rate, and says that the rate was assumed
    from anomalens.data.video_io import encode_video

    raw = encode_video(tmp_path / "camera.mjpeg", list(open_clip(video, None).iter_native()), 10, codec="mjpeg",
                       pix_fmt="yuvj420p", container="mjpeg")
    inferencer = VideoInferencer.load(bundle.folder)
    unstated = inferencer.predict_video(raw)
    assert not unstated.fps_stated and unstated.fps == 25.0 and halved.fps_stated
    assert np.array_equal(unstated.scores, inferencer.predict_video(list(inferencer.frames(raw)[0])).scores)
    library = detector.predict_clip(open_clip(raw, detector.preprocessing), views=False)
    assert np.abs(unstated.scores - library.scores).max() <= PARITY * scale


def test_convlstm_bundle_matches_and_bundles_refuse_the_wrong_runtime(conveyor, tmp_path):
    run = _train(conveyor, "convlstm", tmp_path, epochs=1, sequence_length=8, stride=3)
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    inferencer = VideoInferencer.load(bundle.folder)
    video = _test_video(conveyor)
    expected = analyze_video(run, video, tmp_path / "analysis", device="cpu")
    got = inferencer.predict_video(video)
    assert got.scores.shape == expected.scores.shape == (24,)  # 24 frames, windows of 8 every 3 plus one at the end
    assert np.abs(got.scores - expected.scores).max() <= PARITY * inferencer.calibration.scale
    assert (got.anomalous == expected.anomalous).all()
    frames = [frame for frame in inferencer.frames(video)[0]]  # arrays from a camera give the same scores
    assert np.array_equal(inferencer.predict_video(frames, fps=10).scores, got.scores)
    # where: a convlstm's error map peaks at its score, so its events get regions, the library's and the runtime's
    # alike, also from a bundle exported before bundle.json said so (the same map). Known input: a white square
    # painted on 8 frames at rows 20-39, columns 30-49
    from anomalens.data.video_io import write_video

    painted = [frame.copy() for frame in frames]
    for frame in painted[10:18]:
        frame[20:40, 30:50] = 255
    marked = write_video(tmp_path / "marked.mp4", painted, 10)
    library = analyze_video(run, marked, tmp_path / "marked_analysis", device="cpu").events
    runtime = inferencer.predict_video(marked).events
    assert library and [e["peak_regions"] for e in runtime] == [e.peak_regions for e in library]
    square = [e for e in library if 10 <= e.peak_frame < 18]  # (a one-epoch model also flags a stretch elsewhere)
    assert len(square) == 1 and square[0].image_width == SIZE[1]
    largest = square[0].peak_regions[0]
    assert largest["x"] < 50 and largest["x"] + largest["width"] > 30 and largest["y"] < 40 and largest["y"] + largest["height"] > 20
    older = tmp_path / "older"
    shutil.copytree(bundle.folder, older)
    meta = json.loads((older / "bundle.json").read_text())
    del meta["video"]["map_places_events"]
    (older / "bundle.json").write_text(json.dumps(meta))
    assert [e["peak_regions"] for e in VideoInferencer.load(older).predict_video(marked).events] == \
        [e["peak_regions"] for e in runtime]
    # a variable frame rate: the runtime times events by the file's timestamps, as analyze-video does
    times = [i / 10 + (2.0 if i >= 12 else 0.0) for i in range(len(painted))]  # a 2 s gap after frame 11
    uneven = write_video(tmp_path / "uneven.mp4", painted, 10, times=times)
    library = analyze_video(run, uneven, tmp_path / "uneven_analysis", device="cpu").events
    timed = inferencer.predict_video(uneven)
    assert timed.to_dict()["variable_frame_rate"] is True and np.allclose(timed.times, times, atol=1e-3)
    assert [(e["start_time"], e["end_time"], e["peak_time"]) for e in timed.events] == \
        [(e.start_time, e.end_time, e.peak_time) for e in library]
    late = [e for e in timed.events if e["end_frame"] >= 12]  # the painted square runs over the gap
    assert late and all(e["end_time"] >= 3.2 for e in late)  # not frame / fps (1.2 s and on)
    assert inferencer.predict_video(marked).to_dict()["variable_frame_rate"] is False

    with pytest.raises(CheckpointError, match="video model"):
        Inferencer.load(bundle.folder)
    with pytest.raises(ConfigError, match="fp32 only"):
        export_model(run, "onnx", "int8", tmp_path / "int8")
    broken = tmp_path / "broken"
    shutil.copytree(bundle.folder, broken)
    meta = json.loads((broken / "bundle.json").read_text())
    (broken / "bundle.json").write_text(json.dumps({**meta, "video": {**meta["video"], "stride": 99}}))
    with pytest.raises(CheckpointError, match="stride"):
        VideoInferencer.load(broken)
    (broken / "bundle.json").write_text(json.dumps(meta))
    (broken / "window.onnx").unlink()
    with pytest.raises(CheckpointError, match="window.onnx"):
        VideoInferencer.load(broken)


def test_appearance_above_typical_exports_and_texture_weighted_flow_is_refused(conveyor, tmp_path):
    """The appearance score above the frame's median cell runs in the exported graphs (the median by sorting):
    the bundle's check on the held-out clip matches the checkpoint; the texture-weighted flow is refused by name."""
    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000,
                 appearance_above_typical=True)
    check = export_model(run, "onnx", "fp32", tmp_path / "bundle").check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY
    flat = _train(conveyor, "stfeatures", tmp_path / "flat", appearance_memory=512, appearance_samples=20_000,
                  flow_min_contrast=4.0)
    with pytest.raises(ConfigError, match="flow_min_contrast"):
        export_model(flat, "onnx", "fp32", tmp_path / "flat_bundle")


def test_tail_surprise_of_the_cues_runs_in_the_exported_graphs(conveyor, tmp_path):
    """With ``cue_combination`` "sum+tail" the motion graph outputs each cue's standardised score plus its tail
    surprise (elementary operations, no erfc): the bundle's per-frame scores and cues equal analyze-video's."""
    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000,
                 cue_combination="sum+tail")
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    check = bundle.check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY
    from anomalens.data.video_io import open_clip
    from anomalens.models.base import load_detector

    video = _test_video(conveyor)
    detector = load_detector(run / "model", kind="video")
    expected = detector.predict_clip(open_clip(video, detector.preprocessing), views=False)
    inferencer = VideoInferencer.load(bundle.folder)
    got = inferencer.predict_video(video)
    scale = inferencer.calibration.scale  # differences in units of the validation spread, wherever the threshold lies
    assert np.abs(got.scores - expected.scores).max() <= PARITY * scale
    for cue in ("appearance", "motion"):
        assert np.abs(got.cues[cue] - expected.cues[cue]).max() <= PARITY * scale
    assert expected.scores.max() > 5.0  # the foreign object's frames reach the surprise's quadratic part


def test_typical_appearance_ceiling_runs_in_the_exported_graphs(conveyor, tmp_path):
    """The default discount of a whole-frame shift (typical_appearance_ceiling), with the codec memories and the
    low-pass it weighs in, is part of the motion graph: with the saved ceiling at 0, so that every frame is
    discounted and consults them, the bundle still matches the checkpoint. (Two short training clips make no two
    folds, so the fitted ceiling is infinite and would leave the branch out: a default model trained on more
    clips once failed to export here.)"""
    import torch
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000)
    weights_file = run / "model" / "weights.safetensors"
    weights = load_file(str(weights_file))
    assert {"codec_appearance_memory", "codec_motion_memory"} <= set(weights)  # the default's codec memories
    rewrite_weights(weights_file, {**weights, "appearance_typical_ceiling": torch.zeros(1)})
    check = export_model(run, "onnx", "fp32", tmp_path / "bundle").check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY


def test_noise_level_matching_runs_in_the_exported_appearance_graph(conveyor, tmp_path):
    """Frames noisier than the training footage are low-passed in the appearance graph (match_noise_level): with the
    saved limit at a third of the fitted one, so that every frame is matched (on several rungs of the blur ladder),
    the bundle still matches the checkpoint."""
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000)
    weights_file = run / "model" / "weights.safetensors"
    weights = load_file(str(weights_file))
    rewrite_weights(weights_file, {**weights, "noise_limit": weights["noise_limit"] / 3})
    from anomalens.data.video_io import open_clip
    from anomalens.models.base import load_detector

    detector = load_detector(run, kind="video")
    detector.predict_clip(open_clip(_test_video(conveyor), detector.preprocessing), views=False)
    assert detector._noise_matched > 0  # the library matches frames of this footage: the graph must too
    check = export_model(run, "onnx", "fp32", tmp_path / "bundle").check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY


def test_typical_motion_ceiling_runs_in_the_exported_graphs(conveyor, tmp_path):
    """The discount of a whole-frame motion shift (typical_motion_ceiling) is part of the motion graph: with the saved
    motion ceiling at 0, so that every frame is discounted, the bundle still matches the checkpoint."""
    import torch
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000,
                 typical_motion_ceiling=True)
    weights_file = run / "model" / "weights.safetensors"
    weights = load_file(str(weights_file))
    rewrite_weights(weights_file, {**weights, "motion_typical_ceiling": torch.zeros(1)})
    check = export_model(run, "onnx", "fp32", tmp_path / "bundle").check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY


def test_still_texture_runs_in_the_bundle_and_matches_analyze_video(conveyor, tmp_path):
    """The still-texture channel is computed by the runtime beside the optical flow and fed to the motion graph,
    which weights it by the cells' learned gate (still_texture_where_moving, 0 on the housing, 1 on the belt): the
    bundle's scores equal analyze-video's on a test clip."""
    from safetensors.torch import load_file

    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000, still_texture_weight=25.0,
                 still_texture_where_moving=True)
    gate = load_file(str(run / "model" / "weights.safetensors"))["still_texture_gate"]
    assert float(gate.min()) == 0.0 and float(gate.max()) == 1.0  # the gate matters: a graph without it would differ
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    meta = json.loads((bundle.folder / "bundle.json").read_text())
    assert meta["video"]["still_texture_weight"] == 25.0 and "still" in meta["graphs"]["motion"]["inputs"]
    assert meta["video"]["still_texture_counted"] is True  # the gate is 1 on the belt: the runtime computes the map
    video = _test_video(conveyor)
    expected = analyze_video(run, video, tmp_path / "analysis", device="cpu")
    inferencer = VideoInferencer.load(bundle.folder)
    got = inferencer.predict_video(video)
    assert np.abs(got.scores - expected.scores).max() <= PARITY * inferencer.calibration.scale
    assert (got.anomalous == expected.anomalous).all()
    broken = tmp_path / "broken"
    shutil.copytree(bundle.folder, broken)
    (broken / "bundle.json").write_text(json.dumps({**meta, "video": {**meta["video"], "still_texture_weight": 0.0}}))
    with pytest.raises(CheckpointError, match="still_texture_weight"):
        VideoInferencer.load(broken)
    (broken / "bundle.json").write_text(json.dumps({**meta, "video": {**meta["video"], "still_texture_counted": "yes"}}))
    with pytest.raises(CheckpointError, match="still_texture_counted"):
        VideoInferencer.load(broken)
    for rate in (-5, "25", True):
        (broken / "bundle.json").write_text(json.dumps({**meta, "video": {**meta["video"], "training_fps": rate}}))
        with pytest.raises(CheckpointError, match="training_fps"):
            VideoInferencer.load(broken)
    # a gate that is 0 in every cell (UCSD Ped2): the runtime feeds zeros instead of the map, and still matches
    import torch
    from _saved_tensors import rewrite_weights

    tensors = load_file(str(run / "model" / "weights.safetensors"))
    rewrite_weights(run / "model" / "weights.safetensors", {**tensors, "still_texture_gate": torch.zeros_like(gate)})
    still_bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle_gated_off")
    assert json.loads((still_bundle.folder / "bundle.json").read_text())["video"]["still_texture_counted"] is False
    expected = analyze_video(run, video, tmp_path / "analysis_gated_off", device="cpu")
    inferencer = VideoInferencer.load(still_bundle.folder)
    got = inferencer.predict_video(video)
    assert np.abs(got.scores - expected.scores).max() <= PARITY * inferencer.calibration.scale


def test_the_running_median_cap_and_spill_in_time_run_in_the_bundle(conveyor, tmp_path):
    """``temporal_median``, ``temporal_cap`` and the learned ``temporal_spill`` limits are recorded in bundle.json
    and applied by the runtime as by the library; a bundle exported before them (no such keys) smooths with the
    Gaussian alone, and wrong values are refused on load."""
    import dataclasses

    from anomalens.data.video_io import open_clip
    from anomalens.models.base import load_detector

    run = _train(conveyor, "stfeatures", tmp_path, appearance_memory=512, appearance_samples=20_000,
                 temporal_median=3, temporal_cap=0.0)
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    check = bundle.check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < PARITY
    meta_file = bundle.folder / "bundle.json"
    meta = json.loads(meta_file.read_text())
    assert (meta["video"]["temporal_median"], meta["video"]["temporal_cap"]) == (3, 0.0)
    detector = load_detector(run / "model", kind="video")
    assert meta["video"]["temporal_spill"] == pytest.approx(dict(zip(("appearance", "motion"), detector.spill_limits_.tolist())))

    video = _test_video(conveyor)
    smoothed = detector.predict_clip(open_clip(video, detector.preprocessing), views=False)
    detector.config = dataclasses.replace(detector.config, temporal_median=1, temporal_cap=None, temporal_spill="off")
    gaussian_alone = detector.predict_clip(open_clip(video, detector.preprocessing), views=False)
    scale = VideoInferencer.load(bundle.folder).calibration.scale
    assert np.abs(smoothed.scores - gaussian_alone.scores).max() > 10 * PARITY * scale  # the two rules differ
    del meta["video"]["temporal_median"], meta["video"]["temporal_cap"], meta["video"]["temporal_spill"]
    meta_file.write_text(json.dumps(meta))
    inferencer = VideoInferencer.load(bundle.folder)
    got = inferencer.predict_video(video)
    assert np.abs(got.scores - gaussian_alone.scores).max() <= PARITY * scale
    for field, value in (("temporal_median", 4), ("temporal_cap", "high"), ("temporal_spill", {"appearance": 2.0}),
                         ("temporal_spill", "normal")):
        meta_file.write_text(json.dumps({**meta, "video": {**meta["video"], field: value}}))
        with pytest.raises(CheckpointError, match=field):
            VideoInferencer.load(bundle.folder)
