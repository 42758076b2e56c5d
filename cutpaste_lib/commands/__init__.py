"""One module per ``cutpaste`` subcommand.

Each module exposes ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``; :mod:`cutpaste_lib.cli` wires them up and imports a
command's module only when that command is used, so ``cutpaste synth`` never pays for torch
model code.
"""
