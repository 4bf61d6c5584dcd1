// feeder.LogService as consumers see it: HealthCheck, and one generic watch handler that
// serves all three stream kinds from the hub. Responses are the node daemons' bytes,
// passed through an identity serializer: the relay never re-encodes an event.
import * as grpc from '@grpc/grpc-js';
import { createStreamWriter } from './batch-writer.js';
import type { Hub } from './hub.js';
import { KINDS, methodPath, type KindSpec } from './kinds.js';
import type { Logger } from './logger.js';
import { decodeNonce, decodeReply, decodeRequest, encodeReply } from './proto.js';

type WatchCall = grpc.ServerWritableStream<Buffer, Buffer>;

const identity = (b: Buffer): Buffer => b;

export class LogService {
  private readonly calls = new Set<WatchCall>();

  constructor(
    private readonly hub: Hub,
    private readonly logger: Logger,
    /** the verified client certificate subject of a peer ("ip:port"), when the transport knows it */
    private readonly peerSubject: (peer: string) => string | undefined = () => undefined,
  ) {}

  /** Adds feeder.LogService to a grpc Server. */
  addTo(server: grpc.Server): void {
    // Requests are decoded in the handlers, not by the deserializer: grpc-js takes a falsy
    // deserialized request (filter "", nonce 0) for a missing one and fails the call.
    const healthCheck: grpc.MethodDefinition<Buffer, number> = {
      path: '/feeder.LogService/HealthCheck',
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: encodeReply,
      responseDeserialize: decodeReply,
    };
    // grpc-js types a service definition as one request/response pair; ours mixes them.
    const definition: Record<string, grpc.MethodDefinition<any, any>> = { HealthCheck: healthCheck };
    const handlers: grpc.UntypedServiceImplementation = {
      HealthCheck: (call: grpc.ServerUnaryCall<Buffer, number>, callback: grpc.sendUnaryData<number>) => callback(null, decodeNonce(call.request)),
    };
    for (const spec of KINDS) {
      definition[spec.method] = {
        path: methodPath(spec),
        requestStream: false,
        responseStream: true,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      };
      handlers[spec.method] = (call: WatchCall) => this.watch(spec, call);
    }
    server.addService(definition, handlers);
  }

  /** Ends every open watch with UNAVAILABLE so consumers reconnect (to another replica). */
  endAll(details: string): void {
    for (const call of this.calls) call.emit('error', { code: grpc.status.UNAVAILABLE, details });
  }

  private watch(spec: KindSpec, call: WatchCall): void {
    const filter = decodeRequest(call.request);
    if (spec.acceptedFilters && !spec.acceptedFilters.includes(filter)) {
      call.emit('error', {
        code: grpc.status.INVALID_ARGUMENT,
        details: `${spec.method}: unsupported filter ${JSON.stringify(filter)}; accepted: ${spec.acceptedFilters.map((f) => JSON.stringify(f)).join(', ')}`,
      });
      return;
    }
    const channel = this.hub.channels[spec.kind];
    const peer = call.getPeer();
    const writer = createStreamWriter(call);
    const sub = channel.subscribe(`${peer} ${spec.method}`, writer, { info: { peer, filter, subject: this.peerSubject(peer) } });
    this.calls.add(call);
    this.logger.info({ kind: spec.kind, client: peer, filter, clients: channel.subscribers.size, writer: writer.mode }, 'client joined');
    let left = false;
    const leave = (why: string) => {
      if (left) return;
      left = true;
      this.calls.delete(call);
      this.hub.reportDrops(sub);
      channel.unsubscribe(sub);
      this.logger.info({ kind: spec.kind, client: peer, why, clients: channel.subscribers.size }, 'client left');
    };
    call.on('cancelled', () => leave('cancelled'));
    call.on('error', (err: Error) => leave(err.message));
    call.on('close', () => leave('closed'));
    call.on('finish', () => leave('finished'));
  }
}
