#!/usr/bin/python3
"""An independent LogService consumer written against grpcio, for interoperability tests.

Dials TARGET in plaintext, opens the requested streams, and prints every event as one
JSON line {"kind": "alert"|"log"|"message", "event": {...}}, the event rendered by
json_format.MessageToDict(preserving_proto_field_name=True) (so int64 fields are strings).

    python_consumer.py TARGET [--watch alert:policy] [--watch log:system] [--watch message:]
                       [--count N] [--timeout SECONDS] [--healthcheck NONCE]

--healthcheck calls HealthCheck (after opening the streams, as karmor does) and prints
{"retval": N}. Exit codes: 0 success (N events printed, or the timeout passed without
--count, or all streams ended without --count); 1 a stream or call failed; 3 the timeout
passed before N events arrived.
"""
import argparse
import json
import queue
import sys
import threading
import time

import grpc
from google.protobuf import json_format

import kubearmor_pb2 as pb
import kubearmor_pb2_grpc as pb_grpc

METHODS = {"alert": "WatchAlerts", "log": "WatchLogs", "message": "WatchMessages"}


def pump(kind, call, out):
    try:
        for event in call:
            out.put(("event", kind, json_format.MessageToDict(event, preserving_proto_field_name=True)))
        out.put(("end", kind, None))
    except grpc.RpcError as err:
        out.put(("error", kind, f"{err.code().name}: {err.details()}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--watch", action="append", default=[], help="KIND:FILTER, KIND one of alert, log, message")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=0)
    parser.add_argument("--healthcheck", type=int)
    parser.add_argument("--tls-dir", help="mutual TLS from DIR/ca.crt, DIR/client.crt, DIR/client.key")
    parser.add_argument("--server-name", help="name to verify the server certificate against")
    args = parser.parse_args()

    if args.tls_dir:
        def read(name):
            with open(f"{args.tls_dir}/{name}", "rb") as f:
                return f.read()
        creds = grpc.ssl_channel_credentials(read("ca.crt"), read("client.key"), read("client.crt"))
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(args.target, creds, options)
    else:
        channel = grpc.insecure_channel(args.target)
    stub = pb_grpc.LogServiceStub(channel)
    out = queue.Queue()
    calls = []
    for spec in args.watch:
        kind, _, filt = spec.partition(":")
        if kind not in METHODS:
            print(f"python_consumer: unknown kind {kind!r} in --watch {spec}", file=sys.stderr)
            return 2
        call = getattr(stub, METHODS[kind])(pb.RequestMessage(Filter=filt))
        calls.append(call)
        threading.Thread(target=pump, args=(kind, call, out), daemon=True).start()

    def finish(code):
        for call in calls:
            call.cancel()
        channel.close()
        return code

    if args.healthcheck is not None:
        try:
            reply = stub.HealthCheck(pb.NonceMessage(nonce=args.healthcheck), timeout=10)
        except grpc.RpcError as err:
            print(f"python_consumer: HealthCheck failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return finish(1)
        print(json.dumps({"retval": reply.Retval}), flush=True)

    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    printed = 0
    open_streams = len(calls)
    while open_streams > 0 and (args.count == 0 or printed < args.count):
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            if args.count:
                print(f"python_consumer: timeout after {printed} of {args.count} events", file=sys.stderr)
                return finish(3)
            return finish(0)
        try:
            what, kind, data = out.get(timeout=wait)
        except queue.Empty:
            continue
        if what == "event":
            print(json.dumps({"kind": kind, "event": data}), flush=True)
            printed += 1
        elif what == "error":
            print(f"python_consumer: {METHODS[kind]} failed: {data}", file=sys.stderr)
            return finish(1)
        else:
            open_streams -= 1
    if args.count and printed < args.count:
        print(f"python_consumer: streams ended after {printed} of {args.count} events", file=sys.stderr)
        return finish(1)
    return finish(0)


if __name__ == "__main__":
    sys.exit(main())
