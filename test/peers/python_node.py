#!/usr/bin/python3
"""An independent KubeArmor node daemon written against grpcio, for interoperability tests.

Serves feeder.LogService from code generated out of proto/kubearmor.proto at test time
(PYTHONPATH must hold kubearmor_pb2*.py). HealthCheck echoes the nonce. Each Watch*
stream sends the events of its kind from the JSON file, in order, then stays open and
quiet until the client leaves, as an idle daemon does.

    python_node.py EVENTS.json [--host 127.0.0.1] [--port 0]

EVENTS.json: {"alert": [...], "log": [...], "message": [...]}, each event an object with
the protobuf field names. Prints {"listening": PORT} as the first stdout line once ready.
SIGTERM or SIGINT stop it with exit code 0.
"""
import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format

import kubearmor_pb2 as pb
import kubearmor_pb2_grpc as pb_grpc

stopping = threading.Event()


class LogService(pb_grpc.LogServiceServicer):
    def __init__(self, events):
        self.events = events

    def HealthCheck(self, request, context):
        return pb.ReplyMessage(Retval=request.nonce)

    def _stream(self, kind, context):
        for event in self.events[kind]:
            yield event
        # Stay open and quiet: ending the stream would look like a node failure.
        while context.is_active() and not stopping.wait(0.05):
            pass

    def WatchAlerts(self, request, context):
        return self._stream("alert", context)

    def WatchLogs(self, request, context):
        return self._stream("log", context)

    def WatchMessages(self, request, context):
        return self._stream("message", context)


def load(path):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    types = {"alert": pb.Alert, "log": pb.Log, "message": pb.Message}
    return {kind: [json_format.ParseDict(obj, cls()) for obj in raw.get(kind, [])] for kind, cls in types.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_LogServiceServicer_to_server(LogService(load(args.events)), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"python_node: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    def stop(*_):
        stopping.set()

    # before "listening" is printed: a SIGTERM right after it must find the handler
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    print(json.dumps({"listening": port}), flush=True)
    # a timeout keeps the main thread waking up, so the signal handler always gets to run
    while not stopping.wait(0.5):
        pass
    server.stop(0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
