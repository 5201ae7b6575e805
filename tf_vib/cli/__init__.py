"""The ``tf-vib`` command: ``compress``, ``demo``, ``convert`` and ``bench``.

The CLI is the one part of tf_vib allowed to import the ``converters`` package.
"""

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tf-vib",
        description="Compress Keras LSTM/GRU models with Variational Information Bottleneck "
        "masks and convert them to TFLite for edge devices.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    from converters.cli import add_convert_command
    from tf_vib.cli import bench, compress, demo

    compress.add_command(commands)
    demo.add_command(commands)
    add_convert_command(commands)
    bench.add_command(commands)
    return parser


def main(argv=None):
    """Run one command; a `UsageError` (a bad file or array) is printed, without a traceback,
    and exits with status 2 as argparse does for a bad flag."""
    from tf_vib.cli.files import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UsageError as error:
        message = f"tf-vib {args.command}: error: {error}"
        print(message, file=sys.stderr, flush=True)
        # str() keeps the message for callers of main(); the status is 2 all the same
        exit_ = SystemExit(message)
        exit_.code = 2
        raise exit_ from None


if __name__ == "__main__":
    sys.exit(main())
