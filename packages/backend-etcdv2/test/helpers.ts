import { type EtcdHandle, type EtcdOptions, launchEtcd, privateServer } from '@kv/test-servers';

/**
 * A private etcd (v2 API on) for tests that change server settings (auth,
 * TLS) or stop it. Outside CI a server that cannot be launched skips the
 * tests loudly; with CI=true it fails.
 */
export function privateEtcd(
  what: string,
  options: EtcdOptions = {},
): Promise<{ server: EtcdHandle; skip: false } | { server: undefined; skip: string }> {
  return privateServer(what, () => launchEtcd(options));
}

export const text = (value: Uint8Array | undefined): string => new TextDecoder().decode(value);

/**
 * One call of etcd's v2 auth API (`/v2/auth/...`, JSON), as `user:password`
 * when given. Throws on an unexpected status, with the answer.
 */
export async function v2Auth(
  baseUrl: string,
  method: 'GET' | 'PUT' | 'DELETE',
  path: string,
  body?: unknown,
  credentials?: string,
): Promise<unknown> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (credentials) headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
  const response = await fetch(`${baseUrl}/v2/auth${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const answer = await response.text();
  if (!response.ok) throw new Error(`${method} /v2/auth${path}: ${response.status} ${answer}`);
  return answer === '' ? undefined : JSON.parse(answer);
}
