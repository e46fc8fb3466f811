"""The verifier and the robot's link, each assembled in one place from its settings.

The CLI (`verifier`, `decode`), the ROS nodes and the benchmarks all build a cloud and a link the
same way: a target with its exits, paced to a timing profile or not, on a device; and a link that is
ZeroMQ to an endpoint, an in-process verifier behind an emulated round trip, or nothing (edge
mode). Building them here keeps every caller's choices, and their errors, the same.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..decoding.link import InProcessLink, Link
from ..decoding.static_cache import CacheConfig
from ..decoding.target import TargetEngine
from ..decoding.timing import Pacer, TimingProfile
from ..decoding.verifier import VerifierService
from ..modeling.bundle import ModelBundle, check_same_tokenizer
from ..modeling.placement import CPU_FP32, Placement, resolve_placement
from .client import LinkOptions, connect


def pacer(profile: str | TimingProfile | None) -> Pacer | None:
    """A pacer for a timing profile (a shipped name, a JSON file, or loaded); None: real speed."""
    if not profile:
        return None
    return Pacer(profile if isinstance(profile, TimingProfile) else TimingProfile.load(profile))


@dataclass(frozen=True)
class VerifierConfig:
    """What a verifier serves: the target, its exits, timing emulation, device/precision and cache."""
    target_dir: str
    exits_dir: str | None = None                # None: beside the target
    exit_layers: tuple[int, ...] | None = None  # None: every trained exit
    target_profile: str | TimingProfile | None = None
    placement: Placement = CPU_FP32
    cache: CacheConfig = CacheConfig()

    @classmethod
    def from_params(cls, model: dict) -> "VerifierConfig":
        """The config a verifier's model parameters describe (`commands.verifier.MODEL_KEYS`; None or
        missing: the default), as the verifier command and a fleet's replicas read them."""
        return cls(model["target_dir"], model.get("exits_dir") or None, tuple(model.get("exit_layers") or ()) or None,
                   model.get("target_profile") or None, resolve_placement(model.get("device"), model.get("dtype")),
                   CacheConfig(model.get("cache") or "auto", model.get("cache_slots") or 16,
                               model.get("max_cache_len") or 0, bool(model.get("compile"))))


def open_verifier(config: VerifierConfig) -> TargetEngine:
    """The target engine a verifier runs (served over ZeroMQ by `VerifierServer`, or in-process)."""
    return TargetEngine.from_dir(config.target_dir, config.exits_dir or None,
                                 list(config.exit_layers) if config.exit_layers else None,
                                 pacer(config.target_profile), config.placement, config.cache)


def open_link(draft: ModelBundle, endpoint: str = "", options: LinkOptions | None = None,
              inprocess: VerifierConfig | None = None, rtt_s: float = 0.0) -> Link | None:
    """The robot's link: ZeroMQ to `endpoint`, or an in-process verifier of `inprocess` behind an
    emulated round trip of `rtt_s`, or None (no cloud: edge mode only)."""
    if endpoint and inprocess is not None:
        raise ValueError("give either an endpoint or an in-process target, not both")
    if endpoint:
        return connect(endpoint, draft.tokenizer_fingerprint(), options)
    if inprocess is None:
        return None
    engine = open_verifier(inprocess)
    check_same_tokenizer(draft, engine.bundle)
    return InProcessLink(VerifierService(engine), rtt_s)
