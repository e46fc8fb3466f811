"""Replay benchmark: every recorded frame and instruction through every decoding mode, side by side.

For each frame (and repeat) the modes answer one after another over the same link in the same run,
so their figures compare like for like. The default path is the real one: verifier process, link
emulator process and the robot's ZeroMQ DEALER (bench/bridge.py); `inprocess` swaps in the decoding
core's in-process link with the same round trip (jitter and bandwidth are then not emulated).

A named regime pads the real models' computation to a timing profile (draft and target pacers, the
profile's link unless one is given): the real pipeline at the paper's speeds, timings EMULATED.
`native` runs at this machine's own speed.

Per response it fills a `summary.ResponseRecord`: the figures, the token events and the client trace (a
timeline), and the per-round trace the profile simulator replays. Time starts at frame capture:
the frame is JPEG-round-tripped (what the cloud will decode), encoded into a prompt and decoded;
TTFA is when the incremental parser, fed the final words, completes its first action. Greedy
modes must return exactly the `cloud` mode's tokens: checked for every frame.

A text-only pair (SmolLM2, the paper's Vicuna/Llama-2) replays text prompts instead of a bag
(`ReplayConfig.texts`): each is one "frame" with no image, answered in prose, so no action grammar
and no TTFA; TTC, acceptance and the rest mean the same.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..control.actions import forced_next
from ..control.parser import ActionReady, IncrementalParser
from ..decoding.client import SpecClient
from ..decoding.messages import Start
from ..decoding.modes import GREEDY_LOSSLESS, MODES, DecodeConfig
from ..decoding.timing import Pacer
from ..modeling import jpeg
from ..modeling.bundle import load_bundle
from ..modeling.placement import CPU_FP32, Placement
from ..transport import protocol
from ..transport.assembly import VerifierConfig, open_link, pacer
from ..transport.emulator import LinkSpec
from . import timeline
from .bags import Frame, read_frames
from .regimes import NATIVE, load_regime
from .summary import Bound, ResponseRecord, summarize


@dataclass
class ReplayConfig:
    bag: Path | None                    # None: `texts` are replayed
    draft: Path = Path("models/draft")
    target: Path = Path("models/target")
    exits: Path | None = None
    modes: list[str] = field(default_factory=lambda: list(MODES))
    link: LinkSpec | None = None        # None: the regime's link (native: no delay)
    regime: str = NATIVE
    repeat: int = 1
    frames: int | None = None           # replay only the first N frames
    warmup: int = 1                     # unrecorded responses per mode before measuring
    decode: DecodeConfig = field(default_factory=DecodeConfig)   # every mode's settings but the mode
    inprocess: bool = False
    run_dir: Path = Path("runs")
    threads: int | None = 1             # torch threads in the robot and verifier processes (None: default)
    placement: Placement = CPU_FP32     # draft and target (each in its own process)
    texts: list[str] | None = None      # text prompts to replay instead of the bag's frames (text-only pair)

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"unknown modes {bad}; choose from {', '.join(MODES)}")
        if (self.bag is None) == (not self.texts):
            raise ValueError("replay either a bag's frames or text prompts (a text-only pair), not both or neither")
        if self.repeat < 1 or self.warmup < 0:
            raise ValueError(f"repeat must be >= 1 and warmup >= 0, got {self.repeat} and {self.warmup}")


class MeteredLink:
    """Counts each message's wire size (transport/protocol frames) per session, after the fact,
    so bytes per token mean the same in-process and over ZeroMQ and cost no time while decoding."""

    def __init__(self, link):
        self.link = link
        self.session: str | None = None
        self.sent: dict[str, list] = defaultdict(list)
        self.received: dict[str, list] = defaultdict(list)

    def send(self, msg: object) -> None:
        if isinstance(msg, Start):
            self.session = msg.session
        self.sent[getattr(msg, "session", None)].append(msg)
        self.link.send(msg)

    def recv(self, timeout: float) -> object | None:
        msg = self.link.recv(timeout)
        if msg is not None:
            self.received[getattr(msg, "session", None)].append(msg)
        return msg

    def close(self) -> None:
        self.link.close()

    def bytes(self, session: str) -> tuple[int, int]:
        size = lambda m: len(protocol.pack(m, 0, b"\0" * protocol.SENDER_BYTES))  # noqa: E731
        return sum(map(size, self.sent.pop(session, []))), sum(map(size, self.received.pop(session, [])))


class Replay:
    """Owns the models, the link and one client per mode for a whole run."""

    def __init__(self, cfg: ReplayConfig):
        self.cfg = cfg
        self.profile = load_regime(cfg.regime)
        p = self.profile
        self.link_spec = cfg.link or (LinkSpec((p.rtt_ms or 0) / 1000, p.jitter_ms / 1000) if p else LinkSpec())
        if cfg.threads:
            # robot and cloud share this machine's cores: one thread each keeps them from fighting
            # (and spinning) over the same cores while both compute, as they do when pre-drafting
            torch.set_num_threads(cfg.threads)
        self.draft = load_bundle(cfg.draft, cfg.placement)
        self.target_layers: int | None = None
        self.pacers: dict[str, Pacer] = {}

    @contextlib.contextmanager
    def _cloud(self):
        cfg, spec = self.cfg, self.link_spec
        if cfg.inprocess:
            link = open_link(self.draft, inprocess=VerifierConfig(str(cfg.target), cfg.exits and str(cfg.exits),
                                                                  target_profile=self.profile,
                                                                  placement=cfg.placement), rtt_s=spec.rtt_s)
            self.target_layers = link.service.engine.parts.num_layers
            try:
                yield link
            finally:
                link.close()
            return
        from .bridge import Bridge
        profile_file = self.profile.save(cfg.run_dir / f"profile-{self.profile.name}.json") \
            if self.profile else None
        with Bridge(cfg.target, self.draft.tokenizer_fingerprint(), spec, cfg.exits, profile_file, cfg.decode.seed,
                    threads=cfg.threads, placement=cfg.placement) as link:
            self.target_layers = link.welcome.layers
            yield link

    def run(self, progress: bool = True) -> dict:
        cfg = self.cfg
        frames = ([Frame(0, None, t) for t in cfg.texts[: cfg.frames]] if cfg.texts
                  else read_frames(cfg.bag, cfg.frames))
        records: list[dict] = []
        started = time.time()
        with self._cloud() as raw:
            link = MeteredLink(raw)
            self.pacers = {m: pacer(self.profile) for m in cfg.modes} if self.profile else {}
            clients = {m: SpecClient(self.draft, link, replace(cfg.decode, mode=m), pacer=self.pacers.get(m),
                                     grammar=None if cfg.texts else forced_next)  # prose has no action grammar
                       for m in cfg.modes}
            for _ in range(cfg.warmup):
                for m in cfg.modes:
                    self._respond(clients[m], link, frames[0])
            for client in clients.values():
                if client.memory is not None:
                    client.memory.forget()
            bar = _progress(len(frames) * cfg.repeat * len(cfg.modes), progress)
            for rep in range(cfg.repeat):
                for i, frame in enumerate(frames):
                    for m in cfg.modes:
                        bar.set_description(f"frame {i + 1}/{len(frames)} {m}")
                        rec = self._respond(clients[m], link, frame)
                        rec.frame, rec.repeat = i, rep
                        records.append(rec.to_dict())
                        bar.update()
            bar.close()
        return self._result(frames, records, time.time() - started)

    def _respond(self, client: SpecClient, link: MeteredLink, frame: Frame) -> ResponseRecord:
        draft = self.draft
        parser = IncrementalParser()
        first: dict = {}
        events: list[tuple[float, str, int, int]] = []
        edge = client.config.mode == "edge"

        def on_tokens(kind: str, index: int, tokens: list[int]) -> None:
            t = time.perf_counter() - capture
            events.append((t, kind, index, len(tokens)))
            if kind not in ("final", "unverified") or first:
                return
            for j, word in enumerate(draft.words(tokens)):
                if any(isinstance(e, ActionReady) for e in parser.feed(word, verified=kind == "final" or edge)):
                    first.update(t=t, token=index + j + 1)
                    return

        capture = time.perf_counter()
        prompt = (draft.encode(frame.instruction) if frame.image is None
                  else draft.encode(frame.instruction, *jpeg.roundtrip(frame.image)))
        trace: list = []
        offset = time.perf_counter() - capture
        response = client.generate(prompt, on_tokens, trace)
        m = response.metrics
        finals = [t for t, kind, _, _ in events if kind in ("final", "unverified")]
        up, down = link.bytes(link.session) if not edge else (0, 0)
        tl = timeline.build(trace, link.session, offset, self.link_spec.rtt_s / 2) if not edge else None
        return ResponseRecord.from_metrics(
            m, token_ids=response.tokens, text=response.text, ttfa_s=first.get("t"),
            first_action_token=first.get("token"), ttc_s=finals[-1] if finals else offset + m.ttc_s,
            ttft_s=finals[0] if finals else None, start_offset_s=offset, bytes_up=up, bytes_down=down,
            events=events, timeline=tl, round_trace=timeline.rounds(tl) if tl else [])

    def _result(self, frames: list[Frame], records: list[dict], seconds: float) -> dict:
        cfg = self.cfg
        bound = measured_bound(records, self.link_spec.rtt_s)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "decode"}
        config.update({k: v for k, v in asdict(cfg.decode).items() if k != "mode"})
        config["link"] = asdict(self.link_spec)
        return {
            "kind": "replay",
            "regime": cfg.regime,
            "emulated": self.profile is not None,
            "regime_description": self.profile.description if self.profile else "this machine's own speed",
            "transport": "in-process link (RTT only)" if cfg.inprocess else
                         "ZeroMQ: verifier process + link emulator process + DEALER client",
            "link": self.link_spec.describe(),
            "config": config,
            "frames": len(frames),
            "target_layers": self.target_layers,
            "seconds": seconds,
            "bound": asdict(bound) if bound else None,
            # emulation cannot hide real compute slower than the profile: drafting time over it, per mode
            "draft_late_s": {m: p.late_s for m, p in self.pacers.items()},
            "lossless": check_lossless(records),
            "summary": summarize(records, bound),
            "records": records,
        }


def measured_bound(records: list[dict], rtt_s: float) -> Bound | None:
    """The bound with this run's draft time per token and verification time, from the modes that
    never pre-draft (a dropped pre-draft's drafting time has no verified tokens to divide by)."""
    for modes in (("spec", "spec-ee"), ("spec-ee-pre", "adaptive")):
        rs = [r for r in records if r["mode"] in modes and r["drafted"]]
        if rs:
            return Bound(sum(r["draft_s"] for r in rs) / sum(r["drafted"] for r in rs), rtt_s,
                         sum(r["target_compute_s"] for r in rs) / sum(r["rounds"] for r in rs))
    return None


def check_lossless(records: list[dict]) -> dict:
    """Every greedy mode's tokens against the `cloud` mode's, frame by frame."""
    ref = {(r["frame"], r["repeat"]): r["token_ids"] for r in records if r["mode"] == "cloud"}
    if not ref:
        return {"checked": False, "ok": None, "text": "not checked: the `cloud` mode was not run"}
    checked, mismatches = 0, []
    for r in records:
        if r["mode"] in GREEDY_LOSSLESS and r["mode"] != "cloud" and (r["frame"], r["repeat"]) in ref:
            checked += 1
            if r["token_ids"] != ref[(r["frame"], r["repeat"])] or not r["verified"]:
                mismatches.append({"mode": r["mode"], "frame": r["frame"], "repeat": r["repeat"],
                                   "verified": r["verified"]})
    ok = not mismatches
    text = (f"lossless: every greedy mode returned exactly the cloud mode's tokens ({checked} responses)" if ok
            else f"NOT lossless: {len(mismatches)} of {checked} greedy responses differ from the cloud mode's")
    return {"checked": True, "ok": ok, "responses": checked, "mismatches": mismatches, "text": text}


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, unit="response", leave=False)
