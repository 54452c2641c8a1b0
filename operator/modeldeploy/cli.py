"""Command line: `modeldeploy run | optimize | pull | render | version`.

Importing this module must never import TensorFlow (the operator image has none): every subcommand imports
its implementation lazily. One argparse tree holds every subcommand's flags; those implemented elsewhere bring
theirs from a cheap module:
- `run`: `modeldeploy.controller.add_arguments(parser)`, and `run(ns) -> int` runs the operator.
- `render`: `modeldeploy.resources.add_render_arguments(parser)`, and `run_render(ns) -> int` prints the
  manifests.
Exit codes of `optimize` and `pull` are listed in `modeldeploy.contracts.exitcodes`.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from modeldeploy.contracts import exitcodes
from modeldeploy.contracts import report as contract


def _run(ns) -> int:
    from modeldeploy import controller
    return controller.run(ns)


def _render(ns) -> int:
    from modeldeploy import resources
    return resources.run_render(ns)


def _version(ns) -> int:
    from modeldeploy import __version__
    print(__version__)
    return 0


def _optimize(ns) -> int:
    from modeldeploy.optimize import options, report
    from modeldeploy.storage.errors import ModelDeployError, first_line

    try:
        opts = options.from_args(ns)
        from modeldeploy.optimize import pipeline  # TensorFlow is imported from here on
        result = pipeline.run(opts)
    except ModelDeployError as exc:
        print(f"modeldeploy optimize: {exc.reason}: {exc.message}", file=sys.stderr)
        failed = dict(getattr(exc, "report", None) or {}, ok=False, error=exc.as_dict())
        report.write_termination_message(failed, ns.termination_message_path)
        if ns.report and getattr(exc, "report", None):   # the figures measured before it failed (a gate)
            report.write_json(failed, ns.report)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug: the stack to the log, one line to the termination message
        logging.getLogger("modeldeploy.optimize").exception("unexpected error")
        line = first_line(exc, 500) if str(exc).strip() else ""
        error = contract.error_record(exitcodes.INTERNAL_REASON, exitcodes.INTERNAL, f"{type(exc).__name__}: "
                                      f"{line} (a bug in modeldeploy; the stack is in the Job's log)")
        report.write_termination_message({"ok": False, "error": error}, ns.termination_message_path)
        print(f"modeldeploy optimize: InternalError: {error['message']}", file=sys.stderr)
        return exitcodes.INTERNAL
    print(report.compact_json(result))
    return 0


def _pull(ns) -> int:
    from modeldeploy.storage import publish
    from modeldeploy.storage.errors import ModelDeployError
    from modeldeploy.storage.uris import parse_uri

    try:
        loc = parse_uri(ns.uri, "URI")
        gpu = ns.accelerator == "gpu"
        runtime = ns.runtime or ("tensorflow" if gpu else None)   # a GPU pod runs TF Serving's tensorflow runtime
        manifest = publish.pull_as_is(loc, ns.dest) if ns.as_is else publish.pull(loc, ns.dest, runtime, gpu)
    except ModelDeployError as exc:
        print(f"modeldeploy pull: {exc.reason}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    what = "the SavedModel as it is" if ns.as_is else f"version {manifest.get('version')}"
    variant = f"{manifest['variant']}, " if manifest.get("variant") else ""
    print(f"pulled {what} ({variant}{len(manifest['files'])} files) from {ns.uri} to {ns.dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; one subparser per subcommand."""
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    # Also accepted after the subcommand (`modeldeploy optimize ... --log-level DEBUG`), where people put it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="Python logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_render(sub)
    _add_optimize(sub, common)
    _add_pull(sub, common)
    _add_version(sub)
    return parser


def _add_run(sub) -> None:
    """`modeldeploy run`: its flags come from modeldeploy.controller."""
    from modeldeploy import controller
    run = sub.add_parser("run", help="run the operator against $KUBECONFIG or the in-cluster config",
                         description=controller.DESCRIPTION)
    controller.add_arguments(run)
    run.set_defaults(func=_run, parser=run)


def _add_render(sub) -> None:
    """`modeldeploy render`: its flags come from modeldeploy.resources."""
    from modeldeploy import resources
    render = sub.add_parser("render", help="print the Kubernetes objects a ModelDeployment produces",
                            description=resources.RENDER_DESCRIPTION)
    resources.add_render_arguments(render)
    render.set_defaults(func=_render, parser=render)


def _add_optimize(sub, common: argparse.ArgumentParser) -> None:
    """`modeldeploy optimize`: what the optimizer Job runs (its exit codes are in the description)."""
    opt = sub.add_parser("optimize", parents=[common], help="prune, quantize, evaluate, gate and publish one model version",
                         description=exitcodes.optimize_help())
    opt.add_argument("--source", required=True, help="trained model: SavedModel dir or .keras/.h5 file URI")
    opt.add_argument("--output", required=True, help="versions are published as <output>/<version>/")
    opt.add_argument("--version", type=int, required=True, help="version number N to publish")
    opt.add_argument("--prune-sparsity", type=float, default=0.0, help="fraction of weights zeroed (0-1)")
    opt.add_argument("--fine-tune-epochs", type=int, default=0, help="epochs of fine-tuning while pruning")
    opt.add_argument("--quantize", default="none", help="none | dynamic | float16 | int8 | qat")
    opt.add_argument("--dataset", help=".npz with x_train, y_train, x_val, y_val")
    opt.add_argument("--max-accuracy-drop", type=float, help="gate: largest allowed accuracy drop (0.01 = 1pt)")
    opt.add_argument("--min-compression", type=float, help="gate: smallest allowed gzip compression ratio")
    opt.add_argument("--report", help="also write the full report JSON to this local path")
    opt.add_argument("--overwrite", action="store_true", help="replace an already published version")
    opt.add_argument("--writer", default=os.environ.get("MODELDEPLOY_WRITER_ID") or socket.gethostname(),
                     help="who publishes (default $MODELDEPLOY_WRITER_ID, the Job's name in a Job, else the host "
                          "name): a retry by the same writer may take over a publication lock it left behind")
    opt.add_argument("--allow-unsafe-model-formats", action="store_true",
                     help="load formats that can run Python when loaded (.h5, Lambda layers); the operator passes "
                          "it only when its administrator set MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS=1")
    opt.add_argument("--termination-message-path", default=contract.TERMINATION_MESSAGE_PATH,
                     help="compact report for Kubernetes (written when its directory exists)")
    opt.add_argument("--serving-threads", type=int,
                     help="TensorFlow's intra- and inter-op threads while measuring latency: the serving pod's "
                          "(its CPU limit, else request); default TensorFlow's own (the machine's cores)")
    opt.add_argument("--export-onnx", action="store_true",
                     help="also publish model.onnx (tf2onnx, checked in onnxruntime) beside the SavedModel, for "
                          "serving outside TF Serving; a failed conversion is a warning in the report, never a "
                          "failed publish (needs the `onnx` extra)")
    opt.add_argument("--search-sparsities", help="search: comma-separated sparsities to try (replaces "
                                                 "--prune-sparsity), e.g. 0,0.5,0.8")
    opt.add_argument("--search-modes", help="search: comma-separated quantization modes to try (replaces "
                                            "--quantize), e.g. dynamic,int8")
    opt.add_argument("--search-objective", default="size",
                     help="search: size (gzip bytes a pod pulls) or latency (p50 at batch 1); default size")
    opt.add_argument("--search-budget-seconds", type=int, default=1800,
                     help="search: no candidate starts after this many seconds (the first always runs)")
    opt.add_argument("--batch-size", type=int, default=32, help="batch size for fine-tuning (default 32)")
    opt.add_argument("--learning-rate", type=float, default=1e-3,
                     help="fine-tuning learning rate (default 1e-3, Adam's usual rate, which tfmot's pruning "
                          "examples fine-tune with)")
    opt.set_defaults(func=_optimize, parser=opt)


def _add_pull(sub, common: argparse.ArgumentParser) -> None:
    """`modeldeploy pull`: copy one published version (or a SavedModel as it is) to a local directory."""
    pull = sub.add_parser("pull", parents=[common], help="copy one published version (checks its _COMPLETE marker)")
    pull.add_argument("uri", metavar="URI", help="version URI, e.g. s3://models/digits/optimized/3")
    pull.add_argument("dest", metavar="DEST", help="local directory to create, e.g. /models/digits/3")
    from modeldeploy.api.spec import RUNTIMES
    pull.add_argument("--runtime", choices=RUNTIMES,
                      help="copy only what TF Serving with this runtime reads (the SavedModel, or model.tflite), "
                           "with the warmup records; default every file of the version")
    pull.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu",
                      help="the serving pod's device (default cpu). gpu: a version published with --quantize "
                           "float16 gives its gpu-float16/ SavedModel, which computes in float16, placed at the top "
                           "of DEST; a version without one gives the same files as cpu. Implies --runtime "
                           "tensorflow when --runtime is not given; tflite has no GPU variant")
    pull.add_argument("--as-is", action="store_true",
                      help="copy a SavedModel directory that was never published (serving without optimization)")
    pull.set_defaults(func=_pull, parser=pull)


def _add_version(sub) -> None:
    """`modeldeploy version`: no flags."""
    version = sub.add_parser("version", help="print the modeldeploy version")
    version.set_defaults(func=_version, parser=version)


def main(argv=None) -> int:
    """Entry point for the `modeldeploy` console script."""
    ns, unknown = build_parser().parse_known_args(argv)
    if unknown:   # the subcommand's usage, not the top level's, says what it accepts
        ns.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
