/**
 * The child process behind `startRemoteFaultProxy`: it hosts fault proxies and
 * applies what its parent asks over the IPC channel. It exits when the
 * parent goes (the channel closes).
 */
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import type { ProxyReply, ProxyRequest } from './fault-proxy-remote.js';

const proxies = new Map<number, FaultProxy>();

function stateOf(proxy: FaultProxy): NonNullable<ProxyReply['state']> {
  return { mode: proxy.mode, connections: proxy.connections, accepted: proxy.accepted };
}

async function handle(request: ProxyRequest): Promise<ProxyReply> {
  if (request.op === 'start') {
    const proxy = await startFaultProxy(request.target, request.port ? { port: request.port } : {});
    proxies.set(proxy.port, proxy);
    return { id: request.id, port: proxy.port, state: stateOf(proxy) };
  }
  const proxy = proxies.get(request.port);
  if (!proxy) throw new Error(`no fault proxy on port ${request.port}`);
  switch (request.op) {
    case 'pass':
    case 'blackhole':
    case 'reset':
    case 'refuse':
      proxy[request.op]();
      break;
    case 'latency':
      proxy.latency(request.ms);
      break;
    case 'state':
      break;
    case 'close':
      proxies.delete(request.port);
      await proxy.close();
      break;
  }
  return { id: request.id, state: stateOf(proxy) };
}

process.on('message', (request: ProxyRequest) => {
  handle(request).then(
    (reply) => process.send?.(reply),
    (error: unknown) =>
      process.send?.({ id: request.id, error: error instanceof Error ? error.message : String(error) }),
  );
});
process.on('disconnect', () => process.exit(0));
