"""``napari-xrd`` command line.

Each subcommand lives in its own module ``napari_xrd.cli.<module>`` that
defines ``add_parser(subparsers)`` (which registers the subcommand and sets
``func`` on it) and does its work by calling core functions, the same ones
the widgets call.  Tests call :func:`main` in-process with an argument list.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# subcommand modules, in the order they appear in ``napari-xrd --help``
SUBCOMMAND_MODULES = [
    "view",  # view, demo
    "info",  # info
    "simulate",  # simulate
    "spots",  # spots
    "beam_center",  # beam-center
    "train",  # train spots|beam-center
    "corrections",  # corrections list|verify|export
]


def build_parser() -> argparse.ArgumentParser:
    from napari_xrd import __version__

    parser = argparse.ArgumentParser(
        prog="napari-xrd",
        description="Inspect protein X-ray diffraction images; run napari-xrd's models headless.",
    )
    parser.add_argument("--version", action="version", version=f"napari-xrd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        modname = f"napari_xrd.cli.{name}"
        if importlib.util.find_spec(modname) is None:
            continue  # not written yet
        importlib.import_module(modname).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # clear one-line message for bad input
        print(f"napari-xrd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
