"""The robot's side of decoding, as the draft node uses it: draft model + link + one SpecClient per
response, with the bookkeeping the node reports (bytes on the wire, when the response ran).

Plain Python (no rclpy), so the node stays a thin adapter. The link is the ZeroMQ client
(`transport.client.connect`) when an endpoint is given, or an in-process verifier (tests, laptops).
Over ZeroMQ the image travels as JPEG, so the draft sees the JPEG round trip of the frame: draft and
target then look at the same pixels (transport/protocol.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from spec_edge_cloud.control.actions import forced_next
from spec_edge_cloud.decoding.adaptive import AdaptiveController
from spec_edge_cloud.decoding.client import Response, SpecClient
from spec_edge_cloud.decoding.messages import Cancel, End, Start
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.reuse import AnswerMemory
from spec_edge_cloud.decoding.rounds import FinalDue
from spec_edge_cloud.decoding.timing import Pacer
from spec_edge_cloud.modeling import jpeg
from spec_edge_cloud.modeling.bundle import ModelBundle, load_bundle
from spec_edge_cloud.modeling.placement import resolve_placement
from .share import resolve_path

Emit = Callable[[str, int, list[int]], None]
LINK_PARAMETERS = ("client_secret_key", "server_public_key", "insecure", "expect_model")


Clock = Callable[[], float]


@dataclass
class DecodedResponse:
    response: Response
    started_t: float               # when decoding began (the decoder's clock: the node's)
    ended_t: float                 # when the last token was final
    bytes_up: int | None           # frames robot -> cloud during the response (None: no wire)
    bytes_down: int | None

    @property
    def tokens(self) -> list[int]:
        return self.response.tokens

    @property
    def text(self) -> str:
        return self.response.text

    @property
    def metrics(self):
        return self.response.metrics


class _SessionLink:
    """A link that remembers the session of the last PREFILL, so an abandoned response can be
    cancelled on the cloud (which would otherwise go on verifying or streaming for nobody)."""

    def __init__(self, link) -> None:
        self.link = link
        self.session: str | None = None

    def send(self, msg: object) -> None:
        if isinstance(msg, Start):
            self.session = msg.session
        self.link.send(msg)

    def recv(self, timeout: float):
        return self.link.recv(timeout)

    def cancel(self) -> None:
        if self.session is not None:
            self.link.send(Cancel(self.session))
            self.link.send(End(self.session))
            self.session = None

    def close(self) -> None:
        self.link.close()


class RobotDecoder:
    def __init__(self, bundle: ModelBundle, link, description: str, draft_pacer: Pacer | None = None,
                 jpeg_quality: int | None = None, clock: Clock = time.time) -> None:
        self.bundle = bundle
        self.clock = clock
        self.link = _SessionLink(link) if link is not None else None
        self.description = description
        self.pacer = draft_pacer
        self.jpeg_quality = jpeg_quality   # set: the image crosses the wire as JPEG
        self.adaptive: AdaptiveController | None = None
        self.memory: AnswerMemory | None = None   # recent answers, kept across responses (reuse_answers)
        self.due = FinalDue()                     # when FINALs follow EARLYs, learnt across responses (fan-out)

    def link_state(self) -> str:
        """"up" or "down" for the ZeroMQ link, "in-process", or "none" (edge only)."""
        if self.link is None:
            return "none"
        is_up = getattr(self.link.link, "is_up", None)
        return "in-process" if is_up is None else "up" if is_up else "down"

    def words(self, tokens: list[int]) -> list[str]:
        return self.bundle.words(tokens)

    def _stats(self) -> tuple[int | None, int | None]:
        stats = getattr(self.link.link, "stats", None) if self.link is not None else None
        return (stats.bytes_out, stats.bytes_in) if stats is not None else (None, None)

    def generate(self, instruction: str, image: np.ndarray, settings: dict, emit: Emit) -> DecodedResponse:
        """One response; `settings` holds the node's runtime parameters (mode, gamma, ...)."""
        cfg = DecodeConfig(**{k: settings[k] for k in DecodeConfig.defaults() if k in settings})
        if cfg.mode != "edge" and self.link is None:
            raise ValueError(f"mode {cfg.mode} needs the cloud: set endpoint or inprocess_target")
        data = None
        if self.jpeg_quality is not None:
            image, data = jpeg.roundtrip(image, self.jpeg_quality)
        prompt = self.bundle.encode(instruction, image if self.bundle.is_vlm else None, data)
        if cfg.mode == "adaptive" and self.adaptive is None:
            self.adaptive = AdaptiveController.for_config(cfg)
        if cfg.answers_reused and (self.memory is None or self.memory.answers != cfg.answers_reused):
            self.memory = AnswerMemory(cfg.answers_reused)
        client = SpecClient(self.bundle, self.link if cfg.mode != "edge" else None, cfg,
                            self.adaptive if cfg.mode == "adaptive" else None, self.pacer, self.memory,
                            forced_next, self.due)
        up0, down0 = self._stats()
        started = self.clock()
        response = client.generate(prompt, emit)
        ended = self.clock()
        up1, down1 = self._stats()
        return DecodedResponse(response, started, ended, None if up0 is None else up1 - up0,
                               None if down0 is None else down1 - down0)

    def cancel(self) -> None:
        if self.link is not None:
            self.link.cancel()

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


def open_robot_decoder(p: dict, clock: Clock = time.time) -> RobotDecoder:
    """Load the draft (on its device, in its precision, quantized if asked) and connect to the cloud
    as the draft node's parameters say. `clock` stamps each response's start and end."""
    from spec_edge_cloud.transport.assembly import VerifierConfig, open_link, pacer
    from spec_edge_cloud.transport.client import LinkOptions
    placement = resolve_placement(p["device"], p["dtype"])
    bundle = load_bundle(resolve_path(p["draft_model"], "draft_model"), placement)
    if p["quantize"] != "none":
        from spec_edge_cloud.modeling.quantize import quantize_weights
        quantize_weights(bundle.model, p["quantize"])
    draft_pacer = pacer(p["draft_profile"])
    where = f"draft on {placement}{'' if p['quantize'] == 'none' else ', ' + p['quantize']}"
    emulated = f", draft timings emulated ({p['draft_profile']})" if draft_pacer else ""
    options = LinkOptions(**{k: p[k] for k in LINK_PARAMETERS}, draft_model=bundle.model_fingerprint())
    inprocess = VerifierConfig(str(resolve_path(p["inprocess_target"], "inprocess_target")), target_profile=p["target_profile"], placement=placement) \
        if p["inprocess_target"] else None
    link = open_link(bundle, p["endpoint"], options, inprocess, p["inprocess_rtt_ms"] / 1000.0)
    if p["endpoint"]:
        return RobotDecoder(bundle, link, f"{where}, cloud at {p['endpoint']}{emulated}", draft_pacer,
                            options.jpeg_quality, clock)
    if inprocess is not None:
        return RobotDecoder(bundle, link, f"{where}, in-process target {p['inprocess_target']}, rtt "
                            f"{p['inprocess_rtt_ms']:g} ms{emulated}", draft_pacer, clock=clock)
    return RobotDecoder(bundle, None, f"{where}, no cloud (edge mode only){emulated}", draft_pacer, clock=clock)
