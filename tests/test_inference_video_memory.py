"""The torch-free video runtime keeps its maps as the library does (``FrameBuffer``): in RAM up to a limit, beyond it
memory-mapped from an anonymous temporary file, so that a long video costs disk rather than RAM; the scores, events
and maps stay bit for bit what they were, and closing the result frees the file."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np
import pytest

import anomalens.inference.video as video_runtime
from anomalens.errors import DataError
from anomalens.export import export_model
from anomalens.inference import VideoInferencer, VideoInferenceResult
from test_export_video import _test_video, _train, conveyor  # noqa: F401  (conveyor: the synthetic videos' fixture)
from test_frame_buffer import _spill_handles

MODELS = ("stfeatures", "convlstm")


@pytest.fixture(scope="module")
def bundles(conveyor, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("memory")
    runs = {"stfeatures": _train(conveyor, "stfeatures", tmp, appearance_memory=512, appearance_samples=20_000),
            "convlstm": _train(conveyor, "convlstm", tmp, epochs=1, sequence_length=8, stride=3)}
    return {model: export_model(run, "onnx", "fp32", tmp / f"bundle_{model}").folder for model, run in runs.items()}


@pytest.mark.parametrize("model", MODELS)
def test_maps_beyond_the_memory_limit_are_not_held_in_ram(bundles, conveyor, model, monkeypatch):  # noqa: F811
    inferencer = VideoInferencer.load(bundles[model])
    frames = list(inferencer.frames(_test_video(conveyor))[0]) * 4  # 96 frames
    short = inferencer.predict_video(frames[:24], fps=10)
    assert not isinstance(short.maps, np.memmap)  # a short video's maps fit the default limit: in RAM, as before
    one_map = short.maps[0].nbytes
    most_in_ram = [0]

    class RecordingBuffer(video_runtime.FrameBuffer):  # remembers the most map bytes it ever held in RAM
        def append(self, frames: np.ndarray) -> None:
            super().append(frames)
            most_in_ram[0] = max(most_in_ram[0], sum(part.nbytes for part in self.parts))

    monkeypatch.setattr(video_runtime, "FrameBuffer", RecordingBuffer)
    with inferencer.predict_video(frames, fps=10, memory_limit=40 * one_map) as long:
        assert isinstance(long.maps, np.memmap) and long.maps.shape == (96, *short.maps.shape[1:])
        # at most the limit's worth of maps was ever in RAM (then all of them went to disk), not the 96 frames' worth
        assert 0 < most_in_ram[0] <= 40 * one_map < long.maps.nbytes


@pytest.mark.parametrize("model", MODELS)
def test_spilled_results_are_bit_identical_to_results_in_ram(bundles, conveyor, model):  # noqa: F811
    inferencer = VideoInferencer.load(bundles[model])
    video = _test_video(conveyor)
    frames = list(inferencer.frames(video)[0]) * 3
    for source, fps in ((video, None), (frames, 10.0)):
        in_ram = inferencer.predict_video(source, fps)  # the default limit: what the runtime gave before it spilled
        with inferencer.predict_video(source, fps, memory_limit=0) as on_disk:
            assert isinstance(on_disk.maps, np.memmap) and not isinstance(in_ram.maps, np.memmap)
            for name in ("scores", "normalized_scores", "anomalous", "maps"):
                a, b = getattr(in_ram, name), np.asarray(getattr(on_disk, name))
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
            assert in_ram.maps.dtype == np.float16 and len(in_ram.maps) == len(in_ram.scores)
            assert on_disk.events == in_ram.events and on_disk.to_dict() == in_ram.to_dict()
            assert {k: v.tobytes() for k, v in on_disk.cues.items()} == {k: v.tobytes() for k, v in in_ram.cues.items()}
        if model == "convlstm":  # its score is the maximum of its map (as float32, before the float16 map)
            assert np.allclose(in_ram.maps.max(axis=(1, 2)), in_ram.scores, rtol=1e-3)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's files and mappings in /proc")
def test_the_temporary_file_goes_on_close_on_collection_and_on_errors(bundles, conveyor, tmp_path, monkeypatch):  # noqa: F811
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))  # the spill file's folder, watched alone
    inferencer = VideoInferencer.load(bundles["convlstm"])
    video = _test_video(conveyor)

    result = inferencer.predict_video(video, memory_limit=0)
    assert isinstance(result, VideoInferenceResult) and isinstance(result.maps, np.memmap)
    assert _spill_handles(spill)  # the maps' file, mapped
    expected = float(np.asarray(result.maps, dtype=np.float32).sum())
    result.close()
    assert _spill_handles(spill) == [] and result.maps.shape == (0, *result.maps.shape[1:])
    assert result.scores.shape == (24,) and result.events == inferencer.predict_video(video).events  # the rest stays

    with inferencer.predict_video(video, memory_limit=0) as result:
        assert float(np.asarray(result.maps, dtype=np.float32).sum()) == expected
    assert _spill_handles(spill) == []

    result = inferencer.predict_video(video, memory_limit=0)  # never closed: collected
    assert _spill_handles(spill)
    del result
    gc.collect()
    assert _spill_handles(spill) == []

    def failing():  # a camera that dies after the maps started to spill
        yield from list(inferencer.frames(video)[0])
        raise DataError("the camera went away")

    with pytest.raises(DataError, match="went away"):
        inferencer.predict_video(failing(), fps=10, memory_limit=0)
    assert _spill_handles(spill) == []
    assert list(spill.iterdir()) == []  # and no named file was ever left there
