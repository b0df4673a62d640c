import { which } from './install.js';

/**
 * Node passes a spawned process every descriptor of this one that lacks
 * close-on-exec, and some native clients open their sockets without it (the
 * ZooKeeper C client in the `zookeeper` package is built without
 * SOCK_CLOEXEC). A server started while such a client is connected would
 * hold copies of the client's sockets: its connections outlive the client's
 * close, and this process's epoll keeps reporting the dead socket's events
 * under a descriptor number the client reuses for a new socket, which then
 * never completes its handshake. So children start through bash, which
 * closes every descriptor above stderr (except `keep`) and then execs the
 * command (same PID).
 */
export function closingInheritedFds(
  command: string,
  args: readonly string[],
  keep: readonly string[] = [],
): [string, string[]] {
  const bash = bashPath();
  if (!bash) return [command, [...args]];
  const kept = keep.map((k) => ` && [ "$n" != ${k} ]`).join('');
  const script = `for f in /proc/$$/fd/*; do n=\${f##*/}; if [ "$n" -gt 2 ]${kept}; then eval "exec $n>&-" 2>/dev/null; fi; done; exec "$0" "$@"`;
  return [bash, ['-c', script, command, ...args]];
}

let bashCache: string | null | undefined;
function bashPath(): string | undefined {
  if (bashCache === undefined) bashCache = process.platform === 'linux' ? (which('bash') ?? null) : null;
  return bashCache ?? undefined;
}
