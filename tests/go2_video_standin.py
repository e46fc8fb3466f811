"""A stand-in for the Go2's video service on loopback DDS, for the camera node test (not a test itself).

Answers every GetImageSample request (api 1001 on rt/api/videohub/request) with the bytes of one
JPEG file on rt/api/videohub/response, as the robot answers with its front camera's latest frame.

    python go2_video_standin.py DOMAIN IMAGE.jpg
"""
import argparse
import sys

from unitree_sdk2py.core.channel import ChannelFactoryInitialize, ChannelPublisher, ChannelSubscriber
from unitree_sdk2py.go2.video.video_api import VIDEO_API_ID_GETIMAGESAMPLE, VIDEO_SERVICE_NAME
from unitree_sdk2py.idl.unitree_api.msg.dds_ import Request_, Response_, ResponseHeader_, ResponseStatus_


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("domain", type=int)
    ap.add_argument("image")
    args = ap.parse_args()
    jpeg = list(open(args.image, "rb").read())
    ChannelFactoryInitialize(args.domain, "lo")
    responses = ChannelPublisher(f"rt/api/{VIDEO_SERVICE_NAME}/response", Response_)
    responses.Init()

    def on_request(req: Request_) -> None:
        ident = req.header.identity
        if ident.api_id == VIDEO_API_ID_GETIMAGESAMPLE:
            responses.Write(Response_(ResponseHeader_(ident, ResponseStatus_(0)), "", jpeg))

    requests = ChannelSubscriber(f"rt/api/{VIDEO_SERVICE_NAME}/request", Request_)
    requests.Init(on_request, 16)
    print("ready", flush=True)
    sys.stdin.read()  # run until the test closes our stdin


if __name__ == "__main__":
    main()
