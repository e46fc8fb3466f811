"""A stand-in for the Go2's sport service on loopback DDS, for the backend test (not a test itself).

Subscribes to rt/api/sport/request with unitree_sdk2py's own Request_ type and prints one JSON line
per request (api id, JSON parameter, no-reply flag). Requests that expect a reply get a Response_
with status 0 on rt/api/sport/response, except the api ids given in --silent-apis, which are left
unanswered so the test can watch the SDK time out without holding up the control loop.

    python go2_sport_standin.py DOMAIN [--silent-apis 1005,...]
"""
import argparse
import json
import sys
import time

from unitree_sdk2py.core.channel import ChannelFactoryInitialize, ChannelPublisher, ChannelSubscriber
from unitree_sdk2py.idl.unitree_api.msg.dds_ import Request_, Response_, ResponseHeader_, ResponseStatus_


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("domain", type=int)
    ap.add_argument("--silent-apis", default="")
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
            responses.Write(Response_(ResponseHeader_(ident, ResponseStatus_(0)), "", []))

    requests = ChannelSubscriber("rt/api/sport/request", Request_)
    requests.Init(on_request, 64)
    print("ready", flush=True)
    sys.stdin.read()  # run until the test closes our stdin


if __name__ == "__main__":
    main()
