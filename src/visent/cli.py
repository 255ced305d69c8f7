"""The ``visent`` command line: a thin dispatcher.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``; importing it lazily
keeps ``visent --help`` fast and means a subcommand's heavy imports (transformers, trl) are only paid
when it runs.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "visent.trainer.cli",
        "train with GRPO / VEPO / two-stage entropy / VPPO / PAPO / CPPO / DAPO (a config, TRL-style overrides)",
    ),
    "eval": ("visent.eval.cli", "score a model on a dataset with the verifiable rewards"),
    "data": ("visent.data.cli", "inspect a dataset: `visent data inspect PATH`"),
    "demo": ("visent.lab.demo", "the lab demo: warm-start, then GRPO vs VEPO vs two-stage"),
    "study": ("visent.lab.study", "the controlled lab study across methods, noise rates and seeds"),
    "inspect": ("visent.viz.cli", "token heatmap (entropy, JSD, VEPO score) for a model and dataset"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: visent <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `visent <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from visent import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"visent: unknown command {name!r}; valid commands: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
