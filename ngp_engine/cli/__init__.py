"""Command line: `python -m ngp_engine image ...`, `... nerf ...`, `... sdf ...` and
`... serve`. A thin argparse layer: each training command opens the same Session the
service uses (service/session.py); common options are declared in `common`.

User mistakes (missing file, bad config value, unavailable backend) print one line
`error: ...` on stderr and exit with status 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..config import ConfigError
from ..errors import UserError
from . import image, nerf, poses, sdf

EXIT_USER_ERROR = 2
COMMANDS = {"image": image, "nerf": nerf, "sdf": sdf, "poses": poses}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ngp_engine",
                                     description="Instant-NGP style neural fields.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    image.add_render_parser(sub)
    serve = sub.add_parser(
        "serve", help="run as a service for the Blender add-on (JSON lines on stdin/stdout)",
        description="Serve requests (hello, train, preview, stop, export_mesh, status, shutdown) "
                    "read as JSON lines on stdin; answer with events on stdout; log to stderr. "
                    "Exits when stdin closes. See ngp_engine/service/protocol.py.")
    serve.add_argument("--root", default=None,
                       help="serve a remote client: every path in a request is relative to this "
                            "folder (created) and may not leave it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `image render CHECKPOINT ...` (the image command itself takes a path, not subcommands).
    if argv[:2] == ["image", "render"] and not Path("render").is_file():
        argv = ["image-render", *argv[2:]]
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from ..service.server import main as serve  # noqa: PLC0415

        return serve(root=args.root)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from ..encoding.backends import BackendUnavailable  # noqa: PLC0415 (imports torch)
    try:
        if args.command == "image-render":
            return image.run_render(args)
        return COMMANDS[args.command].run(args)
    except (UserError, ConfigError, BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
