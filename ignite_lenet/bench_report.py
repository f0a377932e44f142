"""Turn pytest-benchmark JSON files into ``REPORT.md``, ``throughput.png`` and ``latency.png``.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/<machine>.json
    python -m ignite_lenet.bench_report benchmarks/results/*.json          # -> benchmarks/results/REPORT.md ...

Each file is one machine measured in one run; its name (without ``.json``) names it in the tables, and an
optional ``<name>.note.txt`` beside it says in one line what it is (which machine, commit, date; before which
change). With CPU and CUDA measurements the report puts the devices side by side: per engine and batch, CPU
images/s, GPU images/s and their ratio, in tables and in both charts. Every input is read and checked before
anything is written; a bad one is a ``ValueError`` (or ``OSError``) naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

from ignite_lenet.cmdline import ArgumentParser, run_cli
from ignite_lenet.report.results import NOTE_SUFFIX


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ignite_lenet.bench_report",
                            description="Summarise pytest-benchmark JSON files into a Markdown report and charts "
                                        "(CPU and GPU side by side when both were measured).")
    parser.add_argument("json_files", nargs="+", metavar="JSON",
                        help=f"pytest-benchmark --benchmark-json outputs (an optional <name>{NOTE_SUFFIX} beside "
                             "one says in a line what it is)")
    parser.add_argument("--output-dir", metavar="DIR", default=None,
                        help="where REPORT.md, throughput.png and latency.png go (default: the first file's directory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    def work() -> None:
        from ignite_lenet.report.render import write_report  # matplotlib: a missing training extra is one line

        output_dir = args.output_dir or Path(args.json_files[0]).parent
        for path in write_report(args.json_files, output_dir):
            print(path)

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
