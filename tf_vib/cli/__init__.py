"""The ``tf-vib`` command: ``demo``, ``convert`` and ``bench``.

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
    from tf_vib.cli import bench, demo

    demo.add_command(commands)
    add_convert_command(commands)
    bench.add_command(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
