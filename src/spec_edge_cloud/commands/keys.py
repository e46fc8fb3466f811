"""`spec-edge-cloud keys`: generate CurveZMQ key pairs for the verifier and its robots.

    spec-edge-cloud keys server --dir keys
    spec-edge-cloud keys robot1 robot2 --dir keys --authorize keys/clients
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. server robot1 robot2")
    p.add_argument("--dir", default="keys", help="where NAME.key (public) and NAME.key_secret go")
    p.add_argument("--authorize", default=None, metavar="DIR",
                   help="also copy the public keys made by this call into DIR, the server's authorized_clients_dir "
                        "(make the server's pair in a call of its own)")
    p.add_argument("--force", action="store_true", help="replace existing key pairs")


def run(args: argparse.Namespace) -> int:
    from ..transport.security import authorize, generate
    try:
        for name in args.names:
            public, secret = generate(args.dir, name, args.force)
            print(f"{name}: public {public}, secret {secret} (keep the secret on its own machine)")
            if args.authorize:
                print(f"  admitted: {authorize(public, args.authorize)}")
    except (ValueError, OSError) as exc:
        print(f"spec-edge-cloud keys: error: {exc}", file=sys.stderr)
        return 2
    print("server: server_secret_key = the server's .key_secret, authorized_clients_dir = the robots' .key files; "
          "robot: client_secret_key = its own .key_secret, server_public_key = the server's .key")
    return 0
