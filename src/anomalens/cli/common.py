"""Flags every command shares, so that they read the same everywhere, and the help that shows each default.

No default is written here: a flag left out is None and the library uses the model's config dataclass (or
:class:`~anomalens.workflows.train.TrainOptions`). :class:`SettingsHelpFormatter` reads those defaults when
``--help`` is printed, so the help can never disagree with what runs (and ``anomalens`` without ``--help``
still starts without importing torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from anomalens.errors import ConfigError
from anomalens.progress import Reporter
from anomalens.runtime import DEVICE_CHOICES

# Ctrl-C: the shell's code for SIGINT, also when training stopped early but kept (and saved) its best model
INTERRUPTED_EXIT_CODE = 130
# flag dest -> the model config field it sets (the same name, by design)
IMAGE_MODEL_FLAGS = ("batch_size", "target_fpr", "epochs", "lr", "latent_dim", "loss", "ssim_weight", "num_workers",
                     "normal_reference", "backbone", "coreset_ratio", "memory_bank_size", "exact_search", "tile",
                     "score_region", "score_window", "threshold_from_folds")
VIDEO_MODEL_FLAGS = ("sequence_length", "stride", "epochs", "batch_size", "lr", "latent_dim", "lstm_hidden_dim",
                     "lstm_layers", "target_fpr", "appearance_memory", "appearance_samples", "motion_memory", "flow_preset", "frame_step",
                     "temporal_sigma", "input_blur", "training_degradations", "flow_min_contrast",
                     "appearance_above_typical", "threshold_from_folds", "typical_appearance_ceiling", "still_texture_weight",
                     "still_texture_where_moving", "codec_memory", "above_ceiling_lowpass", "motion_per_second",
                     "cue_combination", "typical_motion_ceiling", "motion_codec_memory", "temporal_median", "temporal_cap",
                     "temporal_spill", "anomaly_map", "appearance_by_place", "motion_by_place", "place_spread_floor",
                     "match_noise_level")


def check_number(flag: str, value: float | None, *, at_least: float | None = None, above: float | None = None,
                 at_most: float | None = None) -> None:
    """The one check of a numeric flag (None: not given): a finite number within the bounds, else one line naming
    the flag. NaN passes no comparison and infinity no arithmetic downstream, so both are refused here, first."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if at_least is not None and value < at_least:
        raise ConfigError(f"{flag} must be at least {at_least:g}, got {value:g}")
    if above is not None and value <= above:
        raise ConfigError(f"{flag} must be above {above:g}, got {value:g}")
    if at_most is not None and value > at_most:
        raise ConfigError(f"{flag} must be at most {at_most:g}, got {value:g}")


def word_or_number(text: str) -> str | float:
    """A flag's value that is a word or a number (the model checks which words it knows)."""
    try:
        return float(text)
    except ValueError:
        return text


class LibraryChoices:
    """A flag's allowed values, read from the library where they are defined (``module.NAME``, any iterable of the
    names), and only when argparse needs them (a value to check, ``--help``), so that building the parser imports
    nothing heavy (``anomalens.data.flow`` imports OpenCV)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __repr__(self) -> str:
        return f"LibraryChoices({self.module}.{self.name})"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute (default: auto = CUDA, then MPS, then CPU)")
    parser.add_argument("--seed", type=int, default=None, help="random seed; the same seed gives the same model")
    parser.add_argument("--feature-runtime", choices=("auto", "torch", "onnx", "openvino"), default=None,
                        help="how pretrained feature extractors run: auto = ONNX Runtime on CPU (exported once into "
                             "~/.cache/anomalens/onnx), PyTorch on GPUs; torch; onnx; openvino = the same export "
                             "compiled by OpenVINO at fp32, on CPU (optional extra) (default: auto)")


def add_train_flags(parser: argparse.ArgumentParser, data_help: str, example_category: str,
                    several_categories: bool = False) -> None:
    """Data, output and the settings every model has; ``several_categories``: --category takes a list (Ray)."""
    parser.add_argument("--data-dir", required=True, type=Path, help=data_help)
    if several_categories:
        parser.add_argument("--category", required=True, nargs="+", metavar="CATEGORY",
                            help=f"category folder name, e.g. {example_category}; with --engine ray several names "
                                 "(or all) train one model per category in parallel")
    else:
        parser.add_argument("--category", required=True, help=f"category folder name, e.g. {example_category}")
    # no argparse choices: the model registry checks the name; the default comes from the data-kind table
    parser.add_argument("--model", default=None, metavar="MODEL", help="model type")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="where runs go (default: results)")
    parser.add_argument("--run-name", default=None, help="run folder name (default: [<kind>_]<category>_<timestamp>)")
    parser.add_argument("--image-size", type=int, nargs="+", metavar=("H", "W"), default=None,
                        help="resize images (or frames) to H x W; one number: square (default for images: the "
                             "training images' aspect ratio at about 256x256 pixels, up to 1.5x per side when the part "
                             "covers little of the frame; for video the model's own)")
    parser.add_argument("--validation-fraction", type=float, default=None,
                        help="share of the normal training data held out to choose the model and the threshold (video: "
                             "whole clips; with one clip, the share of its frames at the end)")
    parser.add_argument("--batch-size", type=int, default=None, help="images, frames or windows per batch")
    parser.add_argument("--target-fpr", type=float, default=None, help="share of normal samples allowed above the threshold")
    parser.add_argument("--threshold-from-folds", action=argparse.BooleanOptionalAction, default=None,
                        help="the threshold also hears the training images or clips, each scored by memories that did not "
                             "learn it (cross-fitting; patchcore, padim, stfeatures)")


def add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    """The trained model to use: a run folder or its model/ folder (models.base.resolve_model_dir accepts either)."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="run folder (or its model/ folder)")


def add_evaluate_flags(parser: argparse.ArgumentParser) -> None:
    """A trained run to evaluate, on the data it was trained on unless told otherwise."""
    add_checkpoint_flag(parser)
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: the one in run.json)")
    parser.add_argument("--category", default=None, help="category (default: the one in run.json)")
    add_common_flags(parser)


def add_image_model_flags(parser: argparse.ArgumentParser) -> None:
    ae = parser.add_argument_group("autoencoder")
    ae.add_argument("--epochs", type=int, default=None, help="training epochs")
    ae.add_argument("--lr", type=float, default=None, help="learning rate")
    ae.add_argument("--latent-dim", type=int, default=None, help="bottleneck channels")
    ae.add_argument("--loss", choices=("mse", "ssim", "combined"), default=None, help="training loss and map")
    ae.add_argument("--ssim-weight", type=float, default=None, help="SSIM share of the combined loss")
    ae.add_argument("--num-workers", type=int, default=None, help="accepted for compatibility; images are decoded once")
    ae.add_argument("--normal-reference", choices=("none", "mean", "zscore"), default=None,
                    help="compare each pixel's error with normal training images: none (raw smoothed error), mean "
                         "(minus their mean error) or zscore (also divided by their spread)")
    feat = parser.add_argument_group("feature models (patchcore, padim)")
    feat.add_argument("--backbone", choices=("lite0", "lite1", "lite2"), default=None,
                      help="pretrained EfficientNet-Lite feature extractor")
    feat.add_argument("--coreset-ratio", type=float, default=None, help="share of patch features kept")
    feat.add_argument("--memory-bank-size", type=int, default=None, metavar="N",
                      help="patchcore: at most N bank entries, whatever the training set's size")
    feat.add_argument("--exact-search", action="store_true", default=None,
                      help="patchcore: search the bank exactly (otherwise banks above 4096 entries use an approximate "
                           "index, recall@1 about 0.98)")
    feat.add_argument("--tile", type=int, default=None, metavar="N",
                      help="score large images in N x N tiles at native resolution (none = off)")
    feat.add_argument("--score-region", choices=("auto", "image", "part"), default=None,
                      help="where the image score (the map's maximum) is taken: image, part (the part and a small "
                           "margin), or auto: decided at training, part when the background gives the highest scores of "
                           "several validation images")
    feat.add_argument("--score-window", type=int, default=None, metavar="PX",
                      help="with the score on the part: the image score is the highest mean of the map over PX x PX "
                           "pixels (1 = its highest pixel; default 20)")


def add_video_model_flags(parser: argparse.ArgumentParser, with_training_flags: bool) -> None:
    """The convlstm and stfeatures settings; ``with_training_flags`` False when the image flags already add
    --epochs, --lr and --latent-dim (the benchmark takes both)."""
    lstm = parser.add_argument_group("convlstm (the original's model)")
    lstm.add_argument("--sequence-length", type=int, default=None, help="frames per window")
    lstm.add_argument("--stride", type=int, default=None, help="frames between window starts")
    if with_training_flags:
        lstm.add_argument("--epochs", type=int, default=None, help="training epochs")
        lstm.add_argument("--lr", type=float, default=None, help="learning rate")
        lstm.add_argument("--latent-dim", type=int, default=None, help="encoder output channels")
    lstm.add_argument("--lstm-hidden-dim", type=int, default=None, help="ConvLSTM hidden channels")
    lstm.add_argument("--lstm-layers", type=int, default=None, help="ConvLSTM layers")
    group = parser.add_argument_group("stfeatures (the default video model)")
    group.add_argument("--appearance-memory", type=int, default=None, help="entries of the appearance memory; fewer = faster scoring")
    group.add_argument("--appearance-samples", type=int, default=None,
                       help="training patches drawn at random to choose the appearance memory from; raise it with "
                            "--appearance-memory, so that the coreset has enough to choose from")
    group.add_argument("--motion-memory", type=int, default=None, help="normal motions kept per cell")
    group.add_argument("--flow-preset", choices=LibraryChoices("anomalens.data.flow", "FLOW_PRESETS"), default=None,
                       help="optical-flow quality against speed")
    group.add_argument("--frame-step", type=int, default=None, help="learn from every n-th training frame")
    group.add_argument("--temporal-sigma", type=float, default=None, help="Gaussian smoothing of frame scores, in frames; 0 = none")
    group.add_argument("--temporal-median", type=int, default=None, metavar="FRAMES",
                       help="running median of each cue's frame scores before the Gaussian (odd; a shorter spike, such "
                            "as a codec's one-frame jump of the flow, goes; 1 = none)")
    group.add_argument("--temporal-cap", type=float, default=None, metavar="UNITS",
                       help="no frame's smoothed cue more than this many standard units above its own (median) score: "
                            "the smoothing no longer lifts the normal frames next to an anomaly with its score, but a "
                            "noisy anomaly's low frames stay low (default: no cap)")
    group.add_argument("--temporal-spill", type=word_or_number, default=None, metavar="normal|off|UNITS",
                       help="how much of each frame's cue the smoothing in time spreads to its neighbours; the part "
                            "above passes a running median of 3 frames, so that an anomaly keeps its height without "
                            "lifting the normal frames beside it: 'normal' (default) the highest value of the normal "
                            "training frames, per cue; a number of standard units; 'off' all of it")
    group.add_argument("--input-blur", type=float, default=None,
                       help="Gaussian low-pass before the appearance features, in pixels; 0 = none")
    group.add_argument("--flow-min-contrast", type=float, default=None,
                       help="optical flow counts only on texture: the grey-level gradient per pixel at which a vector "
                            "counts half (flat areas show codec noise as motion); 0 = all flow counts")
    group.add_argument("--appearance-above-typical", action=argparse.BooleanOptionalAction, default=None,
                       help="appearance score = highest cell above the frame's median cell (a codec shifts every cell)")
    group.add_argument("--still-texture-weight", type=float, default=None,
                       help="texture that does not move becomes one more motion channel, worth this many pixels per "
                            "frame (a stopped belt is textured and still); 0 = none")
    group.add_argument("--still-texture-where-moving", action=argparse.BooleanOptionalAction, default=None,
                       help="still texture counts only in cells that move in (nearly) every normal training frame "
                            "(a belt), not on a still background")
    group.add_argument("--match-noise-level", action=argparse.BooleanOptionalAction, default=None,
                       help="frames with finer noise or grain than the training frames (a better camera, a higher "
                            "bitrate, MJPEG blocks) are low-passed down to the training frames' noise level before "
                            "the appearance backbone; frames like the training data pass untouched (default on)")
    group.add_argument("--typical-appearance-ceiling", action=argparse.BooleanOptionalAction, default=None,
                       help="the appearance score discounts a frame's typical cell distance where it lies above the "
                            "highest seen on normal training frames (a whole-frame shift: another codec or bitrate)")
    group.add_argument("--training-degradations", nargs="*", default=None, metavar="SPEC",
                       help="re-encodings training frames also learn from: h264:CRF, mpeg4:QUANTISER, jpeg:QUALITY, scale:FACTOR, "
                            "noise:SIGMA, joined by + to chain them "
                            "(the flag alone: none)")
    group.add_argument("--codec-memory", nargs="*", default=None, metavar="SPEC",
                       help="re-encodings of training frames (the kinds above) that make a "
                            "second appearance memory, consulted only where a frame as a whole lies above the normal "
                            "range (another codec or bitrate; the flag alone: none)")
    group.add_argument("--motion-codec-memory", nargs="*", default=None, metavar="SPEC",
                       help="degradations of whole training clips (chains such as noise:3+jpeg:50; noise:SIGMA and the "
                            "kinds above) whose motion makes a second motion memory, consulted only where a frame as a "
                            "whole lies above the normal range (an MJPEG camera's flicker where nothing moves; the flag "
                            "alone: none)")
    group.add_argument("--above-ceiling-lowpass", type=int, default=None, metavar="CELLS",
                       help="where a frame as a whole lies above the normal range, each appearance cell is also averaged "
                            "with its neighbours over this many cells (odd; a codec leaves isolated cells, a defect fills "
                            "a patch); 0 = none")
    group.add_argument("--motion-per-second", action=argparse.BooleanOptionalAction, default=None,
                       help="measure motion per frame of the training footage's rate: a video at another known frame "
                            "rate (25 -> 12.5 fps) has its optical flow scaled by its fps / the training fps")
    group.add_argument("--typical-motion-ceiling", action=argparse.BooleanOptionalAction, default=None,
                       help="the motion score discounts a frame's typical motion cell distance where it lies above the "
                            "highest seen on normal training frames (a codec reading its noise as motion everywhere); "
                            "loses belt-wide motion anomalies where most of the frame moves (README)")
    # the model checks the value (CUE_COMBINATIONS in models/video/stfeatures.py), so that it is listed once
    group.add_argument("--cue-combination", default=None, metavar="RULE",
                       help="how the appearance and motion cues make a frame score: sum (default: of the standardised scores), "
                            "tail (of their Gaussian tail surprises, -log P(Z > z): one clear cue outweighs two mildly "
                            "high ones) or sum+tail (both); sum+tail lost to sum on UCSD Ped2's test set (README)")
    # the model checks the values (PLACE_RULES in models/video/stfeatures.py)
    group.add_argument("--motion-by-place", default=None, metavar="RULE",
                       help="measure each motion cell against its own normal range first: standardise (less the "
                            "cell's normal mean, over its normal spread: more found where normal motion is quiet, and "
                            "more codec noise heard there; README), centre (less the mean) or off")
    group.add_argument("--appearance-by-place", default=None, metavar="RULE",
                       help="the same for appearance cells: off, centre or standardise (a defect on a busy place is "
                            "then measured against that place's busy range; README)")
    group.add_argument("--place-spread-floor", type=float, default=None, metavar="X",
                       help="a standardised cell's spread is at least X times the mean cell's, so that a place normal "
                            "frames hardly vary cannot turn any change into a huge score")
    group.add_argument("--anomaly-map", default=None, metavar="RULE",
                       help="what each frame's map holds: shortfall (default: the frame's score less each cell's "
                            "shortfall from its cue's strongest cell, so events get regions) or sum (the summed "
                            "standardised cue maps of older models); scores are the same")


def example_epilog(*lines: str) -> str:
    return "Example:\n  " + "\n  ".join(lines)


def formatter_for(*kinds: str) -> type[argparse.HelpFormatter]:
    """A help formatter that appends the defaults of the models of ``kinds`` to each setting's help."""
    return type("SettingsHelpFormatter", (SettingsHelpFormatter,), {"kinds": kinds})


class SettingsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: ...)`` to a setting's help, read from the config dataclasses when help is printed."""

    kinds: tuple[str, ...] = ()

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None and action.dest != "help" and self.kinds:
            default = setting_default(action.dest, self.kinds)
            if default and "(default" not in text:  # a help that explains its default itself keeps its words
                text = f"{text} (default: {default})"
        return text.replace("%", "%%")


def setting_default(name: str, kinds: Sequence[str]) -> str | None:
    """How the default of setting ``name`` reads for the models of ``kinds`` ("0.1", "50 (autoencoder), 4 (convlstm)")."""
    from anomalens.models.base import detector_class
    from anomalens.workflows.kinds import data_kind, model_names
    from anomalens.workflows.train import TrainOptions

    if name == "model":
        return ", ".join(f"{data_kind(kind).default_model} for {kind}s" for kind in kinds)
    options = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    if name in options:
        return _shown(options[name])
    by_model: dict[str, Any] = {}
    for kind in kinds:
        for model in model_names(kind):
            fields = {f.name: f.default for f in dataclasses.fields(detector_class(model).config_class)}
            if name in fields and fields[name] is not dataclasses.MISSING:
                by_model[model] = fields[name]
    if not by_model:
        return None
    shown = {model: _shown(value) for model, value in by_model.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{value} ({model})" for model, value in shown.items())


def _shown(value: Any) -> str:
    if isinstance(value, tuple):  # a size reads 240x360, a list of words as words
        return " ".join(value) if value and all(isinstance(v, str) for v in value) else "x".join(str(v) for v in value)
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def print_train_result(result: Any, evaluate_command: str) -> None:
    """What every training command prints at the end, beyond the training's own news lines.

    The workflow already logged (to the terminal and ``train.log``) how training ended, the threshold and where
    the run was saved; saying it again would print each twice. Only the next step is added here.
    """
    print(f"next: anomalens {evaluate_command} --checkpoint {result.run_dir}")


def model_settings(args: argparse.Namespace, model: str, flags: Sequence[str]) -> dict[str, Any]:
    """The model flags the user gave (argparse default None = not given), checked against the model's config.

    Config field names equal the flag names with underscores, so a flag the model lacks is named in the error.
    """
    from anomalens.models.base import detector_class

    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    fields = {f.name for f in dataclasses.fields(detector_class(model).config_class)}
    for name in given:
        if name not in fields:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to model {model}")
    return given


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the user set of the settings every training takes (None = the library's default); the run name is
    checked here, before hours of training, not when the run is saved."""
    from anomalens.workflows.runs import check_run_name

    if args.run_name is not None:
        check_run_name(args.run_name)
    return {"image_size": args.image_size, "validation_fraction": args.validation_fraction, "seed": args.seed,
            "run_name": args.run_name}


MODEL_FLAGS = {"image": IMAGE_MODEL_FLAGS, "video": VIDEO_MODEL_FLAGS}


def run_training(args: argparse.Namespace, kind: str, evaluate_command: str) -> int:
    """``train`` and ``train-video``: the kind's model (or --model) on the given data, then where it went."""
    from anomalens.workflows.kinds import data_kind

    table = data_kind(kind)
    model = args.model or table.default_model
    result = table.train(args.data_dir, args.category, model, args.results_dir, device=args.device, reporter=cli_reporter(),
                         **train_options(args), **model_settings(args, model, MODEL_FLAGS[kind]))
    print_train_result(result, evaluate_command)
    return INTERRUPTED_EXIT_CODE if result.interrupted else 0


def cli_reporter() -> Reporter:
    """Progress for a terminal: tqdm bars, Ctrl-C to stop."""
    return Reporter(show_tqdm=True)
