import { type ConsulOptions, launchConsul, privateServer, type ServerHandle } from '@kv/test-servers';

/**
 * A private Consul agent for tests that change its settings, ACLs or restart
 * it. Outside CI an agent that cannot be launched skips the test loudly; with
 * CI=true it fails.
 */
export function privateConsul(
  what: string,
  options: ConsulOptions = {},
): Promise<{ server: ServerHandle; skip: false } | { server: undefined; skip: string }> {
  return privateServer(what, () => launchConsul(options));
}

/** Rejects if `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const text = (value: Uint8Array): string => new TextDecoder().decode(value);

/** Sends one call to an agent's HTTP API (for test setup: ACL policies and tokens). */
export async function agentCall(
  server: ServerHandle,
  method: 'GET' | 'PUT',
  path: string,
  token: string,
  body?: unknown,
): Promise<unknown> {
  const res = await fetch(`${server.urls[0]}/v1${path}`, {
    method,
    headers: { 'X-Consul-Token': token },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const textBody = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${textBody}`);
  return textBody ? JSON.parse(textBody) : undefined;
}

/** Retries `fn` every 100 ms until it succeeds (an agent or a leader is coming back), bounded by `ms`. */
export async function retry<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
