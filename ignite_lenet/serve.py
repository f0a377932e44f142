"""Serve an exported LeNet-5 over HTTP: the drawing page, ``POST /v1/predict``, ``/healthz``, ``/metrics``.

    python -m ignite_lenet.serve --model exports/lenet5.onnx                     # http://127.0.0.1:8000/
    python -m ignite_lenet.serve --model exports/lenet5.onnx --host 0.0.0.0 --workers 2 --token-file token.txt
    curl --data-binary @digit.png -H 'Content-Type: image/png' http://127.0.0.1:8000/v1/predict

Needs the serving extra (``pip install "ignite_lenet[serve]"``), not torch. A missing or foreign model, an empty
token file or a port in use is one line on stderr and exit code 2; SIGTERM lets in-flight requests finish, then
the process exits with 0. The work is ``ignite_lenet.serving``; this module parses and calls.
"""

from __future__ import annotations

import argparse

from ignite_lenet.cmdline import ArgumentParser, add_arguments, from_args, int_range, run_cli
from ignite_lenet.serving.settings import Settings

# The flags KServe's and Triton's runtimes are started with (a ServingRuntime's args, tritonserver's), as aliases:
# a container spec written for them starts this server unchanged. dest -> (flags, metavar, type)
ALIASES = {
    "model": (("--model-dir", "--model_dir", "--model-repository", "--model-store"), "PATH", str),
    "port": (("--http-port", "--http_port"), "N", int_range(0, 65535)),
    "model_name": (("--model_name",), "NAME", str),
}


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.serve",
        description="Serve an exported LeNet-5 (ONNX Runtime, no torch) over HTTP with FastAPI and uvicorn: GET / "
        "(a page to draw digits on), POST /v1/predict (an image, or multipart 'file' parts), GET /healthz, GET "
        "/metrics (Prometheus), GET /openapi.json.",
    )
    add_arguments(parser, Settings)
    aliases = parser.add_argument_group("KServe and Triton spellings", "the same settings under the names their "
                                        "runtimes are started with")
    for dest, (flags, metavar, kind) in ALIASES.items():
        aliases.add_argument(*flags, dest=dest, metavar=metavar, type=kind, default=argparse.SUPPRESS,
                             help=f"the same as --{dest.replace('_', '-')}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    def work() -> int:
        from ignite_lenet.serving.server import serve  # FastAPI and uvicorn: the serving extra

        return serve(from_args(args, Settings))

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
