#!/usr/bin/env python
"""Fetch insightface's ``recognition/arcface_torch`` at the pinned commit, apply our patches, verify it.

    python tools/fetch_arcface_torch.py                                   # clone from GitHub (network)
    python tools/fetch_arcface_torch.py --source ../insightface           # a local clone (working tree)
    python tools/fetch_arcface_torch.py --source /path/to/insightface.git # a bare / git directory
    python tools/fetch_arcface_torch.py --dest third_party/arcface_torch --force   # replace an old copy

Steps (``qgface_plugin.arcface.fetch``): ``git archive <commit> recognition/arcface_torch | tar -x`` into a
temporary folder beside the destination; ``git apply -p1`` of every ``patches/*.patch`` (sorted); a
``QGFACE_UPSTREAM.json`` pin record (commit, source, patches); ``qgface_plugin.arcface.upstream.check_api`` on
the result (in a child process, so this process imports nothing from it); then a rename into ``--dest``. An
existing destination is only replaced with ``--force``. Without ``--source`` the repository is cloned with
``--filter=blob:none`` (only the blobs of the extracted folder are downloaded).

Progress goes to stderr; the last line of stdout is the folder to use as ``ARCFACE_TORCH_ROOT``
(``third_party/arcface_torch``, the default destination, is found without it).

Exit codes: 0 done; 1 a step failed (clone: no network?, archive, patch, API check); 2 bad input (arguments,
a source that is no git clone or lacks the commit, an existing destination without --force).
"""
from __future__ import annotations

import argparse
import sys

from qgface_plugin import cli
from qgface_plugin.arcface import checkout
from qgface_plugin.arcface.fetch import DEFAULT_URL, FetchError, default_patches_dir, fetch

PROG = "fetch_arcface_torch"


def main(argv=None) -> int:
    parser = cli.parser(__doc__, prog=PROG)
    parser.add_argument("--source", help="local insightface clone (working tree) or git directory "
                                         "(default: clone --url)")
    parser.add_argument("--dest", default=checkout.DEFAULT_DIR, help="destination folder")
    parser.add_argument("--commit", default=checkout.PINNED_COMMIT, help=f"insightface commit (default: the pinned {checkout.PINNED_COMMIT[:12]})")
    parser.add_argument("--no-patches", action="store_true", help="do not apply patches/*.patch")
    parser.add_argument("--force", action="store_true", help="replace an existing destination")
    parser.add_argument("--url", default=DEFAULT_URL, help="repository to clone without --source")
    parser.add_argument("--patches-dir", default=str(default_patches_dir()), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        dest = fetch(source=args.source, dest=args.dest, commit=args.commit, patches=not args.no_patches,
                     force=args.force, url=args.url, patches_dir=args.patches_dir)
    except FetchError as e:
        return cli.error(e, PROG, e.code)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
