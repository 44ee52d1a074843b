"""``--engine ray`` for ``predict``, ``train`` and ``analyze-video``: the flags, and the handlers that call
:mod:`anomalens.distributed`. Without ``--engine ray`` nothing here imports Ray.
"""

from __future__ import annotations

import argparse

from anomalens.cli.common import cli_reporter, print_train_result
from anomalens.errors import ConfigError

ENGINES = ("local", "ray")
# flags that mean something only on Ray: (dest, flag)
RAY_ONLY = (("address", "--address"), ("block_size_ray", "--block-size"), ("cpus_per_task", "--cpus-per-task"))


def add_engine_flags(parser: argparse.ArgumentParser, block_help: str | None = None) -> None:
    group = parser.add_argument_group("engine (a Ray cluster; needs pip install 'anomalens[ray]')")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local (this process, the default) or ray (a Ray cluster, see --address)")
    group.add_argument("--address", default=None, metavar="HOST:PORT",
                       help="the Ray cluster's head (ray start --head --port PORT), or auto for the cluster this "
                            "machine belongs to (default: a private Ray on this machine)")
    if block_help:
        group.add_argument("--block-size", dest="block_size_ray", type=int, default=None, metavar="N", help=block_help)
    group.add_argument("--cpus-per-task", type=float, default=None, metavar="N",
                       help="CPUs each Ray actor or task reserves, and its torch threads (default: 1)")


def check_engine_flags(args: argparse.Namespace) -> None:
    """Ray-only flags given without ``--engine ray`` are an error that names them."""
    if args.engine == "ray":
        return
    given = [flag for dest, flag in RAY_ONLY if getattr(args, dest, None) is not None]
    if getattr(args, "overlays", False):
        given.append("--overlays")
    if given:
        raise ConfigError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --engine ray")


def _cpus(args: argparse.Namespace) -> float:
    cpus = args.cpus_per_task if args.cpus_per_task is not None else 1.0
    if cpus <= 0:
        raise ConfigError(f"--cpus-per-task must be positive, got {cpus}")
    return cpus


def predict_on_ray(args: argparse.Namespace) -> int:
    from anomalens.distributed.batch import DEFAULT_BLOCK_SIZE, predict_images_on_ray

    if args.output_dir is None:
        raise ConfigError("--engine ray needs --output DIR (results are written per block, resumably)")
    report = predict_images_on_ray(
        args.checkpoint, args.paths, args.output_dir, address=args.address,
        block_size=args.block_size_ray or DEFAULT_BLOCK_SIZE, cpus_per_actor=_cpus(args),
        device=args.device, overlays=args.overlays, reporter=cli_reporter(),
    )
    stages = "  ".join(f"{k} {v:.1f} s" for k, v in report.stage_seconds.items())
    print(f"{report.anomalous} of {report.count} images anomalous; {report.blocks_scored} blocks scored, "
          f"{report.blocks_skipped} already done, in {report.seconds:.1f} s")
    if report.blocks_scored:
        print(f"summed over actors: {stages}; blocks per node: {report.blocks_per_node}")
    print(f"results: {report.csv_path} (Parquet shards in {report.output_dir / 'blocks'})")
    return 0


def train_on_ray(args: argparse.Namespace) -> int:
    from anomalens.cli.common import MODEL_FLAGS, model_settings, train_options
    from anomalens.workflows.kinds import data_kind
    from anomalens.workflows.train import train_image_model

    model = args.model or data_kind("image").default_model
    common = dict(device=args.device, **train_options(args), **model_settings(args, model, MODEL_FLAGS["image"]))
    if len(args.category) > 1 or args.category == ["all"]:
        from anomalens.distributed.many import train_categories_on_ray

        for dest, flag in (("block_size_ray", "--block-size"), ("run_name", "--run-name")):
            if getattr(args, dest, None) is not None:
                raise ConfigError(f"{flag} applies to one category, not to several")
        outcomes = train_categories_on_ray(args.data_dir, args.category, model, args.results_dir, address=args.address,
                                           cpus_per_task=_cpus(args), reporter=cli_reporter(), **common)
        for o in outcomes:
            print(f"{o.name}: {'error: ' + o.error if o.error else 'model saved: ' + str(o.output)}")
        failed = [o.name for o in outcomes if o.error]
        if failed:
            print(f"{len(failed)} of {len(outcomes)} categories failed: {', '.join(failed)}")
            return 2
        print(f"next: anomalens evaluate --checkpoint RUN_DIR (one of the {len(outcomes)} folders above)")
        return 0
    from anomalens.distributed.training import DEFAULT_TRAIN_BLOCK_SIZE, ray_memory_bank_fit

    engine = ray_memory_bank_fit(args.address, args.block_size_ray or DEFAULT_TRAIN_BLOCK_SIZE, _cpus(args))
    result = train_image_model(args.data_dir, args.category[0], model, args.results_dir, reporter=cli_reporter(),
                               engine=engine, **common)
    print_train_result(result, "images", "evaluate")
    return 0


def analyze_on_ray(args: argparse.Namespace) -> int:
    from anomalens.distributed.many import analyze_videos_on_ray

    outcomes = analyze_videos_on_ray(args.checkpoint, args.video, args.output_dir, address=args.address,
                                     cpus_per_task=_cpus(args), reporter=cli_reporter(),
                                     device=args.device, fps=args.fps, overwrite=args.overwrite)
    for o in outcomes:
        if o.error:
            print(f"{o.name}: error: {o.error}")
        else:
            print(f"{o.name}: {o.details['anomalous_frames']} of {o.details['frames']} frames above the threshold, "
                  f"{o.details['events']} interval(s); {o.output}")
    return 2 if any(o.error for o in outcomes) else 0
