"""The exported bundle's description, ``bundle.json``: written by ``anomalens.export``, read by the runtime.

A bundle is a folder that scores images without the training stack::

    bundle/
        bundle.json         this description (versioned; validated on load)
        model.onnx          the scoring graph (or model.xml + model.bin for OpenVINO)
        memory_bank.npy     PatchCore's memory bank, fed to the graph as an input (plain .npy, never pickle)

A PatchCore bundle (version 2) has two graphs, ``features.onnx`` and ``maps.onnx``, with the nearest-neighbour
search between them in the runtime (``search``: the library's faiss index ``search_index.faiss``, its ``nprobe``
and PatchCore's ``num_neighbours``; see :mod:`anomalens.inference.search`).

A video bundle (version 2) has several graphs instead of one network, named in ``graphs`` (``stfeatures``:
``appearance.onnx`` and ``motion.onnx`` with ``appearance_memory.npy`` and ``motion_memory.npy``;
``convlstm``: ``window.onnx``), and a ``video`` section with what runs between and after them (the optical
flow's size and preset, the taps of the temporal smoothing, the window length and stride); see
:mod:`anomalens.export.video`.

``bundle.json`` holds everything needed to reproduce the checkpoint's scores: input size and how images are
decoded and resized, which scoring steps run inside the graph, the threshold and normalisation, the model's
name, settings and version, the anomalens version that wrote it and the precision the network runs at.

It also records the SHA-256 of every other file of the bundle (``files_sha256``, name -> hex digest): neither
ONNX, OpenVINO nor ``.npy`` has a checksum, so a bit flipped on a copy to the line PC would load silently and
score differently. :func:`read_bundle` checks every recorded file before anything is opened. Version 3 bundles
always record it and are refused without it; versions 1 and 2 (some exported before the field existed) load
unchecked when it is absent. :data:`BUNDLE_FIELDS` records the fields each version added; a version above them is
a bundle from a newer anomalens, refused with one line that says to upgrade.

``bundle.json`` itself is the one file no checksum covers, so every field the runtime reads is checked for its
type and range on load (:func:`check_description`: the calibration by the checkpoint schema's own
:func:`~anomalens.models.schema.check_calibration`), and against the rest of the description and the graphs
(PatchCore's ``num_neighbours`` against the model's settings, the graphs' inputs and outputs against the files):
a wrong field is one CheckpointError naming it, not a crash or a silently different score at the first image.

>>> description = read_bundle("bundles/bottle_onnx")        # doctest: +SKIP
>>> description["calibration"]["threshold"]                 # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anomalens import limits
from anomalens.errors import AnomalensError, CheckpointError
from anomalens.limits import MAX_FPS, is_frame_rate
# the checkpoint schema's checks (torch-free): one definition of a valid calibration, number, range and version
from anomalens.models.schema import RANGES, check_calibration, read_json
from anomalens.runtime import SHA256_HEX, file_sha256
from anomalens.validation import Invalid, Range, check_number, check_version, show

if TYPE_CHECKING:
    from anomalens.inference.engines import Engine

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "anomalens-bundle"
# What each version of bundle.json added, the one record of the fields a bundle may have: top-level fields, and
# "section.field" for the sections whose fields are fixed (not "graphs", "outputs", "constant_inputs" and
# "files_sha256", keyed by file and graph names; not model.config, the model's settings, nor the informative
# export_check and postprocessing). The newest version is BUNDLE_VERSION (what export writes) and every version up
# to it is read. tests/test_format_versions.py checks that exported bundles have no other field and that a released
# version's fields never change, so a field the runtime must honour comes with a new version: an older runtime then
# refuses the bundle as "exported by a newer anomalens: upgrade" instead of ignoring the field and scoring
# differently. A field is listed under the version current when it was added (older bundles lack it: the runtime
# reads each such field with the value that reproduces them, see _check_video).
BUNDLE_FIELDS: dict[int, tuple[str, ...]] = {
    1: ("format", "version", "anomalens_version", "created", "model", "runtime", "input", "preprocessing", "outputs",
        "postprocessing", "constant_inputs", "calibration", "calibration_source", "export_check",
        "model.name", "model.kind", "model.format_version", "model.trained_with", "model.config", "model.checkpoint",
        "model.category", "runtime.engine", "runtime.precision", "runtime.network", "runtime.openvino_precision_hint",
        "input.name", "input.dtype", "input.layout", "input.channels", "input.image_size", "input.max_batch",
        "preprocessing.decode", "preprocessing.resize", "preprocessing.image_size",
        "calibration.threshold", "calibration.scale", "calibration.target_fpr", "calibration.validation_mean",
        "calibration.validation_std", "calibration.validation_max", "calibration.validation_count",
        "calibration.pixel_threshold", "calibration.pixel_target_fpr", "calibration.tail_model",
        "calibration.measured_fpr", "calibration.effective_count", "calibration.needed_count", "calibration.warning"),
    # several graphs (video models; PatchCore's search between two graphs), the files' checksums
    2: ("graphs", "search", "video", "files_sha256",
        "search.index", "search.kind", "search.nprobe", "search.num_neighbours", "search.without_faiss",
        "video.sequence_length", "video.stride", "video.batch_size", "video.flow_size", "video.flow_preset",
        "video.still_texture_weight", "video.still_texture_counted", "video.training_fps", "video.cues",
        "video.map_places_events", "video.temporal_sigma", "video.temporal_kernel", "video.temporal_median",
        "video.temporal_spill", "video.temporal_cap",
        "calibration.clip_held_out_fpr", "calibration.fold_shift", "calibration.fold_shift_items"),
    # no new field: files_sha256 always written, and required (version 2 bundles were exported before and after it)
    3: (),
}
BUNDLE_VERSION = max(BUNDLE_FIELDS)
READABLE_VERSIONS = tuple(BUNDLE_FIELDS)
CHECKSUMS_REQUIRED_FROM = 3
FORMATS = ("onnx", "openvino")
PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
REQUIRED = ("format", "version", "anomalens_version", "model", "runtime", "input", "outputs", "calibration")
CHECKSUMS = "files_sha256"  # file name -> SHA-256 of every file of the bundle but bundle.json (absent in older bundles)


def bundle_checksums(folder: str | Path) -> dict[str, str]:
    """``files_sha256`` of the bundle being written in ``folder``: every file in it but ``bundle.json``."""
    return {path.name: file_sha256(path) for path in sorted(Path(folder).iterdir())
            if path.is_file() and path.name != BUNDLE_FILE}


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def read_bundle(folder: str | Path) -> dict[str, Any]:
    """``bundle.json`` of ``folder``, checked for format, version, every field the runtime reads
    (:func:`check_description`) and the files it names, and each file against the SHA-256 that ``bundle.json``
    records for it (``files_sha256``)."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise CheckpointError(f"not an exported anomalens bundle (no {BUNDLE_FILE})", folder)
    meta = read_json(path)  # size-capped; unreadable or not JSON: one CheckpointError naming the file
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{BUNDLE_FILE} does not describe an anomalens bundle", path)
    # before the fields: a newer version's fields would otherwise be missed or refused one by one
    check_version(meta, "version", READABLE_VERSIONS, "bundle", "this bundle was exported", path)
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise CheckpointError(f"{BUNDLE_FILE} lacks {', '.join(missing)}", path)
    check_description(meta, path)
    runtime = meta["runtime"]
    if runtime.get("engine") not in FORMATS or runtime.get("precision") not in PRECISIONS[runtime["engine"]]:
        raise CheckpointError(f"unknown engine or precision: {runtime.get('engine')} {runtime.get('precision')}", path)
    video = meta["model"]["kind"] == "video"
    split = video or "graphs" in meta  # several graphs (video models; PatchCore since version 2) or one network
    networks = [graph["file"] for graph in _graphs(meta, path).values()] if split else [runtime.get("network")]
    if video:
        _check_video(meta, path)
    elif split:
        networks += _check_search(meta, path)
    constants = meta.get("constant_inputs", {})
    for name in [*networks, *[spec["file"] for spec in constants.values()]]:
        if not isinstance(name, str) or Path(name).name != name or not (folder / name).is_file():
            raise CheckpointError(f"the bundle's file {name!r} is missing", folder)
    # last: the description's own refusals cost nothing, hashing reads every file once
    _check_checksums(meta, folder, [*networks, *[spec["file"] for spec in constants.values()]])
    return meta


def check_description(meta: dict[str, Any], path: Path) -> None:
    """The fields of a parsed ``bundle.json`` that the runtime reads, by type and range, and against each other;
    a CheckpointError naming the first wrong field (``field calibration.scale: must be in (0, inf), got 0``).
    The sections of video models (``video``) and PatchCore's search (``search``) have checks of their own."""
    try:
        _description(meta)
    except Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", path) from None


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(field, f"must be an object, got {show(value)}")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(field, f"must be a non-empty string, got {show(value)}")
    return value


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise Invalid(field, f"must be a list of names, got {show(value)}")
    return value


def _size(value: Any, field: str) -> list[int]:
    """(height, width) of a model input: the range the checkpoint schema allows for ``image_size``."""
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(field, f"must be [height, width], got {show(value)}")
    return [int(check_number(f"{field}[{i}]", v, int, RANGES["image_size"])) for i, v in enumerate(value)]


def _description(meta: dict[str, Any]) -> None:
    version = meta["version"]
    _string(meta["anomalens_version"], "anomalens_version")
    model = _object(meta["model"], "model")
    _string(model.get("name"), "model.name")
    if model.get("kind") not in ("image", "video"):
        raise Invalid("model.kind", f"must be image or video, got {show(model.get('kind'))}")
    config = _object(model.get("config", {}), "model.config")
    runtime = _object(meta["runtime"], "runtime")
    video = model["kind"] == "video"
    if version == 1 and ("graphs" in meta or video):  # one network only, until version 2 (video, PatchCore's search)
        raise Invalid("graphs", "a version 1 bundle has one network and no graphs: the description was changed")
    if version >= CHECKSUMS_REQUIRED_FROM and CHECKSUMS not in meta:
        raise Invalid(CHECKSUMS, f"is missing (every bundle of version {CHECKSUMS_REQUIRED_FROM} records it): the "
                                 "description was changed after export; export the model again")
    spec = _object(meta["input"], "input")
    size = _size(spec.get("image_size"), "input.image_size")
    for where, other in (("model.config.image_size", config.get("image_size")),
                         ("preprocessing.image_size", _object(meta.get("preprocessing", {}), "preprocessing").get("image_size"))):
        if other is not None and other != size:  # export writes all three from the model's image_size
            raise Invalid("input.image_size", f"{size} differs from {where} {show(other)}: the description was changed")
    if not video:
        _string(spec.get("name"), "input.name")
        if "max_batch" in spec:
            check_number("input.max_batch", spec["max_batch"], int, RANGES["batch_size"])
        outputs = _object(meta["outputs"], "outputs")
        for name in ("scores", "maps"):
            _string(outputs.get(name), f"outputs.{name}")
        if outputs.get("views") is not None:
            _string(outputs["views"], "outputs.views")
    if "graphs" in meta or video:
        graphs = _object(meta.get("graphs"), "graphs")
        if not graphs:
            raise Invalid("graphs", "must name at least one graph")
        for name, graph in graphs.items():
            graph = _object(graph, f"graphs.{name}")
            _string(graph.get("file"), f"graphs.{name}.file")
            for key in ("inputs", "outputs"):
                if key in graph:
                    _strings(graph[key], f"graphs.{name}.{key}")
    elif runtime.get("network") is None:
        raise Invalid("runtime.network", "must name the network's file, got None")
    check_calibration(meta["calibration"], "calibration.")
    constants = _object(meta.get("constant_inputs", {}), "constant_inputs")
    for name, entry in constants.items():
        entry = _object(entry, f"constant_inputs.{name}")
        _string(entry.get("file"), f"constant_inputs.{name}.file")
        shape = entry.get("shape")  # load_constants holds the array to it
        if not isinstance(shape, list):
            raise Invalid(f"constant_inputs.{name}.shape", f"must be a list of sizes, got {show(shape)}")
        for i, v in enumerate(shape):
            check_number(f"constant_inputs.{name}.shape[{i}]", v, int, Range(1, limits.MAX_MEMORY_ENTRIES))
        if entry.get("dtype", "float32") != "float32":  # the graphs take float32 (export writes every constant so)
            raise Invalid(f"constant_inputs.{name}.dtype", f"must be float32, got {show(entry.get('dtype'))}")


def _check_checksums(meta: dict[str, Any], folder: Path, used: list[str]) -> None:
    """Every file that ``files_sha256`` records has that SHA-256, and every file the runtime opens is recorded
    (else a file swapped in under a new name would escape the check)."""
    path = folder / BUNDLE_FILE
    if CHECKSUMS not in meta:  # exported before checksums: loads as it did
        return
    recorded = meta[CHECKSUMS]
    if not isinstance(recorded, dict) or not all(_is_file_checksum(name, digest) for name, digest in recorded.items()):
        raise CheckpointError(f"{CHECKSUMS} must be an object of file names and SHA-256 hex digests", path)
    weights = [Path(name).with_suffix(".bin").name for name in used if name.endswith(".xml")]  # OpenVINO's beside it
    unrecorded = [name for name in [*used, *weights] if name not in recorded]
    if unrecorded:
        raise CheckpointError(f"{BUNDLE_FILE} records no checksum for {unrecorded[0]!r}: the bundle was changed after "
                              "export; export the model again", path)
    for name, expected in recorded.items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"the bundle's file {name!r} is missing", folder)
        if file_sha256(file) != expected:
            raise CheckpointError(f"{name} does not match the checksum in {BUNDLE_FILE}: damaged or changed after "
                                  "export; copy the bundle again or export the model again", file)


def _is_file_checksum(name: Any, digest: Any) -> bool:
    """A file name of the bundle's own folder (no path) and a SHA-256 as lowercase hex."""
    return isinstance(name, str) and Path(name).name == name and isinstance(digest, str) and bool(SHA256_HEX.fullmatch(digest))


def open_graphs(folder: Path, files: dict[str, str], runtime: dict[str, Any], threads: int | None = None) -> dict[str, Engine]:
    """The engines of the bundle's graphs (name -> file); a graph the engine cannot read (damaged, truncated, not
    a graph) is a CheckpointError naming its file."""
    from anomalens.inference.engines import open_engine

    engines = {}
    for name, file in files.items():
        try:
            engines[name] = open_engine(folder / file, runtime["engine"], runtime["precision"], threads)
        except AnomalensError:  # the engine is not installed: its own message says which to install
            raise
        except Exception as exc:  # ONNX Runtime and OpenVINO raise their own error types, internals in the text:
            # the type's name only, for a graph may also be fine but newer than the installed engine reads
            raise CheckpointError(f"the bundle's graph {name!r} cannot be read by {runtime['engine']} "
                                  f"({type(exc).__name__}: damaged, not a graph file, or made for a newer "
                                  f"{runtime['engine']}); export the model again or update {runtime['engine']}",
                                  folder / file) from None
    return engines


def load_constants(folder: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays fed to the graphs (``constant_inputs``: memory banks, plain ``.npy``, never pickle), each of the
    dtype and shape that ``bundle.json`` records; a damaged file is a CheckpointError naming it."""
    constants = {}
    for name, spec in meta.get("constant_inputs", {}).items():
        path = folder / spec["file"]
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # numpy's messages name its internals (format versions, pickle)
            raise CheckpointError(f"constant input {name!r} is not a readable .npy array (damaged, truncated or saved "
                                  "with pickle); export the model again", path) from None
        shape = spec.get("shape")  # the graphs take float32 (export writes every constant so)
        if not isinstance(array, np.ndarray) or array.dtype != np.float32 or (shape is not None and list(array.shape) != shape):
            found = f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray) else "an .npz archive"
            raise CheckpointError(f"constant input {name!r} must be a float32 array of shape {shape}, got {found}", path)
        constants[name] = array
    return constants


def _graphs(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    graphs = meta.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise CheckpointError("a video bundle needs its graphs (field 'graphs')", path)
    return graphs


def _check_search(meta: dict[str, Any], path: Path) -> list[str]:
    """PatchCore's two graphs and its ``search`` section; the index file, if any, must exist too."""
    if set(meta["graphs"]) != {"features", "maps"} or meta["model"].get("name") != "patchcore":
        raise CheckpointError(f"graphs {sorted(meta['graphs'])} of model {meta['model'].get('name')!r} are not supported", path)
    search = meta.get("search")
    if not isinstance(search, dict):
        raise CheckpointError("a PatchCore bundle needs its 'search' section", path)
    bank_shape = meta.get("constant_inputs", {}).get("memory_bank", {}).get("shape")
    if not (isinstance(bank_shape, list) and len(bank_shape) == 2):
        raise CheckpointError(f"field constant_inputs.memory_bank.shape: PatchCore searches a memory bank of "
                              f"[entries, channels], got {show(bank_shape)}", path)
    neighbours, nprobe, index = search.get("num_neighbours"), search.get("nprobe"), search.get("index")
    bank = bank_shape[0]
    try:
        check_number("search.num_neighbours", neighbours, int, RANGES["num_neighbours"])
        exported = meta["model"].get("config", {}).get("num_neighbours")
        if exported is not None and neighbours != exported:  # the score's image weight depends on it
            raise Invalid("search.num_neighbours", f"{show(neighbours)} differs from the exported model's "
                                                   f"model.config.num_neighbours {show(exported)}: the description was changed")
        if nprobe is not None:  # an IVF index has at most one cell per bank entry
            check_number("search.nprobe", nprobe, int, Range(1, bank))
        if index is not None:
            _string(index, "search.index")
    except Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", path) from None
    return [] if index is None else [index]


def check_graph_signatures(meta: dict[str, Any], engines: dict[str, Engine], folder: Path) -> None:
    """Each graph's inputs and outputs as ``bundle.json`` names them, against the graph files themselves (inputs
    fed, outputs read, the model input's height and width where the graph fixes them): a description that does not
    fit its graphs is a CheckpointError naming the field at load, not an engine's error at the first image."""
    path = folder / BUNDLE_FILE
    spec, outputs = meta["input"], meta["outputs"]
    declared = {name: graph for name, graph in meta.get("graphs", {}).items()} or {"network": {}}
    for name, engine in engines.items():
        inputs = getattr(engine, "inputs", None)
        if inputs is None:
            continue
        graph = declared.get(name, {})
        if "inputs" in graph and set(graph["inputs"]) != set(inputs):
            raise CheckpointError(f"field graphs.{name}.inputs: {sorted(graph['inputs'])} are not the inputs of "
                                  f"{graph.get('file', name)} ({sorted(inputs)}): the description was changed", path)
        if "inputs" not in graph and not set(inputs) <= {spec["name"], *meta.get("constant_inputs", {})}:
            raise CheckpointError(f"field input.name: the network's inputs are {sorted(inputs)}, bundle.json feeds "
                                  f"{spec['name']!r} and constant_inputs", path)
        shape = inputs.get(spec["name"])
        if shape is not None and len(shape) == 4:
            fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:]]
            if any(d is not None and d != want for d, want in zip(fixed, spec["image_size"])):
                raise CheckpointError(f"field input.image_size: {spec['image_size']} is not what the graph "
                                      f"{graph.get('file', name)} takes ({shape[2:]}): the description was changed", path)
    final = engines.get("maps") or engines.get("network")
    names = getattr(final, "output_names", None)
    if names is not None:
        for key, value in outputs.items():
            if value is not None and value not in names:
                raise CheckpointError(f"field outputs.{key}: the graph has no output {value!r} (it has "
                                      f"{', '.join(names)})", path)


def _check_video(meta: dict[str, Any], path: Path) -> None:
    """The ``video`` section: the fields the runtime uses, with the right types."""
    video = meta.get("video")
    if not isinstance(video, dict):
        raise CheckpointError("a video bundle needs its 'video' section", path)
    name = meta["model"].get("name")
    wanted = {"stfeatures": {"appearance", "motion"}, "convlstm": {"window"}}.get(name)
    if wanted is None or set(meta["graphs"]) != wanted:
        raise CheckpointError(f"video model {name!r} with graphs {sorted(meta['graphs'])} is not supported", path)

    def positive_int(field: str) -> int:
        value = video.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"video.{field} must be a positive integer, got {value!r}", path)
        return value

    if not isinstance(video.get("map_places_events", False), bool):  # absent in bundles exported before it
        raise CheckpointError(f"video.map_places_events must be true or false, got {video['map_places_events']!r}", path)
    if name == "convlstm":
        if positive_int("stride") > positive_int("sequence_length"):
            raise CheckpointError("video.stride is longer than video.sequence_length", path)
        return
    positive_int("batch_size")
    size = video.get("flow_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise CheckpointError(f"bad video.flow_size {size!r}", path)
    if not isinstance(video.get("flow_preset"), str):
        raise CheckpointError("video.flow_preset must be a string", path)
    still = video.get("still_texture_weight", 0.0)  # absent in bundles exported before it existed
    if not isinstance(still, (int, float)) or isinstance(still, bool) or not 0.0 <= still <= 1000.0:
        raise CheckpointError(f"video.still_texture_weight must be a number in [0, 1000], got {still!r}", path)
    motion = meta["graphs"].get("motion")
    motion_inputs = (motion.get("inputs") or []) if isinstance(motion, dict) else []
    if ("still" in motion_inputs) != (still > 0):
        raise CheckpointError("the motion graph's inputs do not match video.still_texture_weight", path)
    counted = video.get("still_texture_counted", still > 0)  # absent in bundles exported before it existed
    if not isinstance(counted, bool) or (counted and not still > 0):
        raise CheckpointError(f"video.still_texture_counted must be a boolean, false without still texture, got {counted!r}", path)
    rate = video.get("training_fps")  # absent in bundles exported before it existed: motion per frame, as then
    if rate is not None and not is_frame_rate(rate):
        raise CheckpointError(f"video.training_fps must be null or a frame rate in (0, {MAX_FPS:g}], got {rate!r}", path)
    kernel = video.get("temporal_kernel")
    if not (isinstance(kernel, list) and len(kernel) % 2 == 1
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in kernel)
            and abs(sum(kernel) - 1.0) < 1e-6):
        raise CheckpointError("video.temporal_kernel must be an odd number of non-negative taps summing to 1", path)
    median = video.get("temporal_median", 1)  # both absent in bundles exported before them
    if isinstance(median, bool) or not isinstance(median, int) or median < 1 or median % 2 == 0 or median > 999:
        raise CheckpointError(f"video.temporal_median must be an odd number of frames from 1 to 999, got {median!r}", path)
    cap = video.get("temporal_cap")
    if cap is not None and not _number_within(cap, 0, 1000):
        raise CheckpointError(f"video.temporal_cap must be null or a number from 0 to 1000, got {cap!r}", path)
    spill = video.get("temporal_spill")  # absent in bundles exported before it
    if spill is not None and not (isinstance(spill, dict) and set(spill) == {"appearance", "motion"}
                                  and all(_number_within(v, 0, 1000) for v in spill.values())):
        raise CheckpointError("video.temporal_spill must be null or an object of appearance and motion, each a number "
                              f"from 0 to 1000, got {str(spill)[:60]}", path)


def _number_within(value: Any, low: float, high: float) -> bool:
    """A JSON number (not a boolean) from ``low`` to ``high``."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high
