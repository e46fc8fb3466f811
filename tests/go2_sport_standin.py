"""A stand-in for the Go2's sport and motion-switcher services on loopback DDS, for the backend
tests (not a test itself).

Subscribes to rt/api/sport/request with unitree_sdk2py's own Request_ type and prints one JSON line
per request (api id, JSON parameter, no-reply flag). Requests that expect a reply get a Response_
with status --status (0) on rt/api/sport/response, except the api ids given in --silent-apis, which
are left unanswered so the test can watch the SDK time out without holding up the control loop.
The motion switcher (rt/api/motion_switcher/request) answers CheckMode with --mode (the name of the
active motion mode; "" as a robot whose sport service was released), or not at all with
--no-switcher. Its requests are not printed: they are the backend's start-up check.

    python go2_sport_standin.py DOMAIN [--silent-apis 1005,...] [--status 3204] [--mode normal]
"""
import argparse
import json
import queue
import subprocess
import sys
import threading
import time

from unitree_sdk2py.core.channel import ChannelFactoryInitialize, ChannelPublisher, ChannelSubscriber
from unitree_sdk2py.idl.unitree_api.msg.dds_ import Request_, Response_, ResponseHeader_, ResponseStatus_


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("domain", type=int)
    ap.add_argument("--silent-apis", default="")
    ap.add_argument("--status", type=int, default=0)
    ap.add_argument("--mode", default="normal")
    ap.add_argument("--no-switcher", action="store_true")
    args = ap.parse_args()
    silent = {int(a) for a in args.silent_apis.split(",") if a}
    ChannelFactoryInitialize(args.domain, "lo")
    responses = ChannelPublisher("rt/api/sport/response", Response_)
    responses.Init()

    def on_request(req: Request_) -> None:
        ident, noreply = req.header.identity, req.header.policy.noreply
        print(json.dumps({"api_id": ident.api_id, "parameter": req.parameter, "noreply": noreply,
                          "t": time.time()}), flush=True)
        if not noreply and ident.api_id not in silent:
            responses.Write(Response_(ResponseHeader_(ident, ResponseStatus_(args.status)), "", []))

    requests = ChannelSubscriber("rt/api/sport/request", Request_)
    requests.Init(on_request, 64)
    if not args.no_switcher:
        switcher = ChannelPublisher("rt/api/motion_switcher/response", Response_)
        switcher.Init()

        def on_switcher(req: Request_) -> None:
            data = json.dumps({"form": "0", "name": args.mode})
            switcher.Write(Response_(ResponseHeader_(req.header.identity, ResponseStatus_(0)), data, []))

        switcher_requests = ChannelSubscriber("rt/api/motion_switcher/request", Request_)
        switcher_requests.Init(on_switcher, 8)
    print("ready", flush=True)
    sys.stdin.read()  # run until the test closes our stdin


class StandIn:
    """Runs this file in a subprocess (the test's robot) and hands out the requests it reports."""

    def __init__(self, domain: int, silent_apis: tuple[int, ...] = (), status: int = 0, mode: str | None = "normal") -> None:
        """mode None: no motion switcher answers."""
        switcher = ["--no-switcher"] if mode is None else ["--mode", mode]
        self.proc = subprocess.Popen([sys.executable, __file__, str(domain), "--silent-apis",
                                      ",".join(map(str, silent_apis)), "--status", str(status), *switcher],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(x) for x in self.proc.stdout], daemon=True).start()
        if self._lines.get(timeout=30).strip() != "ready":
            raise RuntimeError("the Go2 stand-in did not start")

    def next_request(self, timeout: float = 5.0) -> dict:
        """The next request received (raises queue.Empty after `timeout` s without one)."""
        while True:
            line = self._lines.get(timeout=timeout)
            if line.startswith("{"):
                return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


if __name__ == "__main__":
    main()
