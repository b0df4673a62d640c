/**
 * A child process of the kit's multi-process recipe cases (leader election
 * failover, discovery with several processes). Started with `fork()` and one
 * JSON argument (`ChildSpec`); it opens the store with `createStore(url)`
 * after importing the given modules (so the backend is registered), plays
 * its role, and reports over the IPC channel. The parent SIGKILLs it to
 * simulate a crash.
 */
import { campaign, createStore, type Leadership, members, observe, register, type Store } from '../index.js';

export interface ChildSpec {
  readonly url: string;
  /** Absolute paths or file: URLs of modules to import first. */
  readonly imports: readonly string[];
  readonly role: 'candidate' | 'observer' | 'member' | 'members';
  readonly name: string;
  /** The election key or the discovery directory. */
  readonly key: string;
  /** ms */
  readonly ttl: number;
  /** candidate: the fenced resource it writes to while leading. */
  readonly resource?: string;
}

export type ChildMessage =
  | { type: 'ready' }
  | { type: 'leading'; token: number }
  | { type: 'wrote'; token: number; n: number }
  | { type: 'fenced'; token: number; stale: boolean; detail: string }
  | { type: 'lost'; token: number }
  | { type: 'resigned' }
  | { type: 'leader'; value: string | null }
  | { type: 'registered' }
  | { type: 'members'; ids: string[] }
  | { type: 'closed' }
  | { type: 'error'; message: string };

/** What the fenced resource holds: the largest token it accepted and the writes, in order. */
export interface ResourceState {
  maxToken: number;
  /** `name:token:n` of each accepted write (the last `RESOURCE_LOG` of them). */
  log: string[];
}

export const RESOURCE_LOG = 400;
const decoder = new TextDecoder();

function send(message: ChildMessage): void {
  process.send?.(message);
}

const spec = JSON.parse(process.argv[2] as string) as ChildSpec;
let stopping = false;
const commands: string[] = [];
let wake: (() => void) | undefined;
process.on('message', (command: string) => {
  commands.push(command);
  wake?.();
});
process.on('disconnect', () => process.exit(0));

function nextCommand(): Promise<string> {
  const queued = commands.shift();
  if (queued) return Promise.resolve(queued);
  return new Promise((resolve) => {
    wake = () => {
      wake = undefined;
      resolve(commands.shift() as string);
    };
  });
}

/** One write to the resource: accepted only if `token` is not older than the newest it has seen. */
async function writeFenced(store: Store, key: string, token: number, n: number): Promise<'ok' | string> {
  for (;;) {
    let previous = null;
    let state: ResourceState = { maxToken: 0, log: [] };
    try {
      previous = await store.get(key);
      state = JSON.parse(decoder.decode(previous.value)) as ResourceState;
    } catch (error) {
      if ((error as { code?: string }).code !== 'KEY_NOT_FOUND') throw error;
    }
    if (token < state.maxToken) return `token ${token} < ${state.maxToken}`;
    const next: ResourceState = {
      maxToken: token,
      log: [...state.log, `${spec.name}:${token}:${n}`].slice(-RESOURCE_LOG),
    };
    try {
      await store.atomicPut(key, JSON.stringify(next), previous);
      return 'ok';
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== 'KEY_MODIFIED' && code !== 'KEY_EXISTS' && code !== 'KEY_NOT_FOUND') throw error;
    }
  }
}

async function candidate(store: Store): Promise<void> {
  const leadership: Leadership = await campaign(store, spec.key, { value: spec.name, ttl: spec.ttl });
  const token = leadership.fencingToken;
  send({ type: 'leading', token });
  leadership.lost.addEventListener('abort', () => {
    if (!stopping) send({ type: 'lost', token });
  });
  const writing = (async () => {
    for (let n = 1; !stopping && !leadership.lost.aborted; n++) {
      const result = await writeFenced(store, spec.resource as string, token, n);
      if (result === 'ok') send({ type: 'wrote', token, n });
      else send({ type: 'fenced', token, stale: leadership.lost.aborted, detail: result });
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  for (;;) {
    const command = await nextCommand();
    if (command === 'resign') {
      stopping = true;
      await writing;
      await leadership.resign();
      send({ type: 'resigned' });
      return;
    }
  }
}

async function main(): Promise<void> {
  for (const module of spec.imports) await import(module);
  const store = await createStore(spec.url);
  send({ type: 'ready' });
  if (spec.role === 'candidate') {
    await candidate(store);
  } else if (spec.role === 'observer') {
    for await (const leader of observe(store, spec.key)) {
      send({ type: 'leader', value: leader === null ? null : decoder.decode(leader.value) });
    }
  } else if (spec.role === 'member') {
    const registration = await register(store, spec.key, { id: spec.name, value: spec.name, ttl: spec.ttl });
    send({ type: 'registered' });
    while ((await nextCommand()) !== 'close') {}
    await registration.close();
    send({ type: 'closed' });
  } else if (spec.role === 'members') {
    for await (const list of members(store, spec.key)) send({ type: 'members', ids: list.map((m) => m.id) });
  }
  await store.close();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.exit(1);
  },
);
