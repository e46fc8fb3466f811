"""`spec-edge-cloud decode`: one response from a draft/target pair in any mode, printed or as JSON."""
from __future__ import annotations

import argparse
import json
import sys

from ..decoding.modes import DecodeConfig
from ..modeling.placement import add_placement_arguments, placement_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    DecodeConfig.add_arguments(p)
    p.add_argument("--draft", default="models/draft", help="draft model directory (Hugging Face format)")
    p.add_argument("--target", default="models/target", help="target model directory (in-process verifier)")
    p.add_argument("--exits", default=None, help="exit-head directory (default: beside the target)")
    p.add_argument("--prompt", required=True, help="instruction text")
    p.add_argument("--image", default=None, help="image file (JPEG/PNG) for a VLM")
    p.add_argument("--rtt-ms", type=float, default=0.0, help="in-process link: emulated round trip")
    p.add_argument("--endpoint", default=None, help="tcp://HOST:PORT of a running verifier (else in-process)")
    p.add_argument("--client-key", default="", help="this robot's CURVE secret key file (NAME.key_secret)")
    p.add_argument("--server-key", default="", help="the verifier's CURVE public key file (NAME.key)")
    p.add_argument("--target-profile", default=None, help="timing profile for the in-process target (emulated)")
    p.add_argument("--draft-profile", default=None, help="timing profile for the draft (emulated)")
    add_placement_arguments(p)  # the draft's and the in-process target's
    p.add_argument("--quantize", choices=["none", "int8", "int4"], default="none",
                   help="weight-only quantization of the draft (torchao)")
    p.add_argument("--json", action="store_true", help="print one JSON object: tokens, text, metrics")


def load_image(path: str):
    import cv2
    import numpy as np
    data = np.fromfile(path, dtype=np.uint8) if path else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise ValueError(f"cannot read an image from {path!r} (not a JPEG/PNG file?)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> int:
    from ..bench.replay import MeteredLink
    from ..control.actions import forced_next
    from ..decoding.client import SpecClient
    from ..modeling.bundle import load_bundle
    from ..transport.assembly import VerifierConfig, open_link, pacer
    from ..transport.client import LinkOptions

    try:
        config = DecodeConfig.from_args(args)
        placement = placement_from_args(args)
        draft = load_bundle(args.draft, placement)
        if args.quantize != "none":
            from ..modeling.quantize import quantize_weights
            quantize_weights(draft.model, args.quantize)
        image = load_image(args.image) if args.image else None
        prompt = draft.encode(args.prompt, image)
        link = None
        if args.mode != "edge":
            link = MeteredLink(open_link(  # the wire size of every message, counted after the response
                draft, args.endpoint or "", LinkOptions(client_secret_key=args.client_key,
                                                        server_public_key=args.server_key),
                None if args.endpoint else VerifierConfig(args.target, args.exits, None, args.target_profile,
                                                          placement), args.rtt_ms / 1000))
        try:
            response = SpecClient(draft, link, config, pacer=pacer(args.draft_profile),
                                  grammar=forced_next).generate(prompt)
        finally:
            if link is not None:
                link.close()
    except (ValueError, FileNotFoundError) as exc:
        print(f"spec-edge-cloud decode: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        emulated = bool(args.target_profile or args.draft_profile)
        metrics = response.metrics.to_dict()
        if link is not None:
            up, down = link.bytes(link.session)
            rounds = max(response.metrics.rounds, 1)
            metrics.update(bytes_up_per_round=up / rounds, bytes_down_per_round=down / rounds)
        print(json.dumps({"tokens": response.tokens, "text": response.text, "verified": response.verified,
                          "timings_emulated": emulated, "metrics": metrics}))
    else:
        print(response.text)
    return 0
