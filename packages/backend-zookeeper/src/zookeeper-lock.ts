import { randomUUID } from 'node:crypto';
import {
  type AcquiredLock,
  type AcquireRequest,
  backoff,
  delay,
  InvalidArgumentError,
  LockLostError,
  monotonicNow,
  timeoutSignal,
} from '@kv/core';
import { Wake } from './wake.js';
import { isRc, ZK } from './zookeeper-errors.js';
import { encodeSegment, encodeValue, pathOf } from './zookeeper-nodes.js';
import { EPHEMERAL, EPHEMERAL_SEQUENTIAL, type NativeStat, type ZkSession } from './zookeeper-session.js';
import type { EphemeralSession } from './zookeeper-store.js';

/** What the lock recipe needs from the store. */
export interface ZkLockHost {
  readonly main: ZkSession;
  readonly waiters: ZkSession;
  readonly lockRoot: string;
  readonly requestTimeout: number;
  readonly stopping: AbortSignal;
  ttlSession(ttl: number): Promise<EphemeralSession>;
  createNode(
    session: ZkSession,
    path: string,
    data: Uint8Array,
    flags: number,
    signal: AbortSignal,
  ): Promise<string>;
  deleteKey(fullKey: string, signal: AbortSignal): Promise<void>;
  userKey(fullKey: string): string;
}

const WAITER = 'w-';
const HOLDER = 'holder';

/** The lock's queue: under the first prefix segment, out of reach of any user key's deleteTree. */
export function lockDirOf(host: ZkLockHost, fullKey: string): string {
  return `${host.lockRoot}/${fullKey.split('/').map(encodeSegment).join('%002F')}`;
}

/**
 * The ZooKeeper lock recipe, in two sessions:
 * - a waiter queues as an ephemeral sequential node `w-N` in the store's
 *   shortest session (so a dead waiter's place goes within the server's
 *   minSessionTimeout) and watches only its predecessor: no herd;
 * - the first waiter (or a tryLock) takes the lock by creating the
 *   ephemeral node `holder` in a session whose timeout is the lock's ttl:
 *   only one create can succeed, and the node goes when its holder stops
 *   renewing the session. The fencing token is that node's `czxid`: every
 *   acquisition creates it anew, so it only grows, across deleted queues
 *   and server restarts alike.
 * While held, the lock key itself holds the lock's value (an ephemeral node
 * of the same session). Renewal is a sync (answered by the leader, never by
 * a follower alone) and a read on the holder's session: the core's loss deadline (3/4 of the ttl after the last renewal that was
 * sent and answered) then falls before the server can expire the session.
 */
export async function acquireZkLock(
  host: ZkLockHost,
  fullKey: string,
  request: AcquireRequest,
): Promise<AcquiredLock | null> {
  const { signal, ttl } = request;
  const es = await host.ttlSession(ttl);
  const granted = es.session.granted;
  if (granted !== ttl) {
    throw new InvalidArgumentError(
      `lock ttl ${ttl} ms: the server grants a session of ${granted} ms for it (its minSessionTimeout/maxSessionTimeout); a lock needs a session of exactly its ttl`,
    );
  }
  const dir = lockDirOf(host, fullKey);
  const holderPath = `${dir}/${HOLDER}`;
  const holderTag = Buffer.from(randomUUID());
  if (!request.wait) return take(host, es, fullKey, dir, holderPath, request, holderTag);
  let mine: string | undefined;
  let mineGeneration = 0;
  // Our waiter nodes are named `w-<tag>-<sequence>`: a create whose answer was lost with the
  // connection may still have made the node, and the tag finds it (else it would sit ahead of
  // everyone, ourselves included, for as long as the waiter session lives).
  const tag = `${WAITER}${randomUUID()}-`;
  let unsure = false;
  try {
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) throw signal.reason;
      let names: string[];
      try {
        if (unsure) {
          const found = (await host.main.children(signal, dir).catch(noNode)).find((n) => n.startsWith(tag));
          if (found) {
            mine = `${dir}/${found}`;
            mineGeneration = host.waiters.generation;
          }
          unsure = false;
        }
        if (!mine || host.waiters.generation !== mineGeneration) {
          mine = undefined;
          unsure = true;
          mine = await host.createNode(
            host.waiters,
            `${dir}/${tag}`,
            new Uint8Array(0),
            EPHEMERAL_SEQUENTIAL,
            signal,
          );
          unsure = false;
          // After the create: a create refused by an expired session is issued again in the next one.
          mineGeneration = host.waiters.generation;
        }
        names = await host.main.children(signal, dir);
      } catch (error) {
        if (isRc(error, ZK.NONODE)) {
          mine = undefined;
          continue;
        }
        if (!isConnectionError(error) || signal.aborted) throw error;
        // The member we talk to went away (an election, a partition): wait and go on.
        await delay(backoff(attempt, 100, 1_000), signal).catch(() => {});
        continue;
      }
      const name = mine.slice(mine.lastIndexOf('/') + 1);
      const queue = names.filter((n) => n.startsWith(WAITER)).sort(bySequence);
      const at = queue.indexOf(name);
      if (at < 0) {
        // Our place went (the waiter session was replaced): queue again.
        mine = undefined;
        continue;
      }
      const wake = new Wake();
      host.waiters.on('session', wake.fire);
      es.session.on('session', wake.fire);
      try {
        let stat: NativeStat | null;
        if (at === 0) {
          const acquired = await take(host, es, fullKey, dir, holderPath, request, holderTag);
          if (acquired) return acquired;
          stat = await host.main.exists(signal, holderPath, wake.fire);
        } else {
          stat = await host.main.exists(signal, `${dir}/${queue[at - 1] as string}`, wake.fire);
        }
        if (stat) await wake.wait(signal);
      } catch (error) {
        if (!isConnectionError(error) || signal.aborted) throw error;
        await delay(backoff(attempt, 100, 1_000), signal).catch(() => {});
      } finally {
        host.waiters.off('session', wake.fire);
        es.session.off('session', wake.fire);
      }
    }
  } finally {
    if (mine) {
      const path = mine;
      const bound = timeoutSignal(host.requestTimeout, host.stopping);
      void host.waiters.remove(bound, path, -1).catch(() => {});
    }
  }
}

/** Waiter names sort by their sequence number (the last 10 digits), not by their tags. */
function bySequence(a: string, b: string): number {
  const x = a.slice(-10);
  const y = b.slice(-10);
  return x < y ? -1 : x > y ? 1 : 0;
}

function noNode(error: unknown): string[] {
  if (isRc(error, ZK.NONODE)) return [];
  throw error;
}

/** The connection failed under the call (its outcome is unknown); the session may well live on. */
function isConnectionError(error: unknown): boolean {
  return (
    isRc(error, ZK.CONNECTIONLOSS) ||
    isRc(error, ZK.OPERATIONTIMEOUT) ||
    isRc(error, ZK.SESSIONMOVED) ||
    isRc(error, ZK.SESSIONEXPIRED)
  );
}

/** Creates the holder node: the lock, or null if someone holds it. */
async function take(
  host: ZkLockHost,
  es: EphemeralSession,
  fullKey: string,
  dir: string,
  holderPath: string,
  request: AcquireRequest,
  tag: Buffer,
): Promise<AcquiredLock | null> {
  const { signal } = request;
  const session = es.session;
  const sentAt = monotonicNow();
  // The holder node carries the tag of this acquisition: a create tried again after its answer was
  // lost with the connection finds its own node (the session alone does not tell: a store's locks of
  // one ttl share it).
  try {
    await host.createNode(session, holderPath, tag, EPHEMERAL, signal);
  } catch (error) {
    if (!isRc(error, ZK.NODEEXISTS)) throw error;
    const found = await session.get(signal, holderPath).catch(() => undefined);
    if (!found?.data?.equals(tag)) return null;
  }
  // The generation the node was made in (a create refused by an expired session is issued again in
  // the next one): the holder node must belong to the session we hold now.
  const generation = session.generation;
  const stat = await session.exists(signal, holderPath);
  if (!stat || stat.ephemeralOwner !== session.sessionId || session.generation !== generation) {
    return null;
  }
  const token = stat.czxid;
  const keyPath = pathOf(fullKey);
  const display = await showValue(host, session, keyPath, request.value, signal).catch(async (error) => {
    await session.remove(AbortSignal.timeout(host.requestTimeout), holderPath, -1).catch(() => {});
    throw error;
  });
  const onExpired = (gone: number) => {
    if (gone === generation) request.onLost('its ZooKeeper session expired');
  };
  session.on('expired', onExpired);
  const lost = () =>
    new LockLostError(host.userKey(fullKey), 'its holder node is gone (the session expired)');
  let released = false;
  return {
    fencingToken: token,
    sentAt,
    async renew(renewSignal) {
      if (session.generation !== generation) throw lost();
      // Through the leader: a follower cut off from it answers reads and pings by itself (until its
      // syncLimit runs out) while the leader expires the session. A sync is forwarded to the leader,
      // which checks the session is live and touches it: once it answers, the session lives at least
      // ttl after the renewal was sent, later than the core's loss deadline.
      await session.sync(renewSignal, holderPath);
      const now = await session.exists(renewSignal, holderPath);
      if (!now || now.czxid !== token || session.generation !== generation) throw lost();
    },
    async release(releaseSignal) {
      if (released) return;
      session.off('expired', onExpired);
      if (session.generation !== generation) {
        released = true;
        return;
      }
      // The value first, then the holder: the next holder's value is never cleared by us.
      if (display.ephemeral) {
        const shown = await session.exists(releaseSignal, keyPath);
        if (shown && shown.czxid === display.czxid) {
          await session.remove(releaseSignal, keyPath, -1).catch((error) => {
            if (!isRc(error, ZK.NONODE)) throw error;
          });
        }
      } else {
        await host.deleteKey(fullKey, releaseSignal);
      }
      const held = await session.exists(releaseSignal, holderPath);
      if (held && held.czxid === token) {
        await session.remove(releaseSignal, holderPath, -1).catch((error) => {
          if (!isRc(error, ZK.NONODE)) throw error;
        });
      }
      released = true;
      // An empty queue goes too; a waiter that queues meanwhile makes it again.
      void host.main.remove(releaseSignal, dir, -1).catch(() => {});
    },
  };
}

/**
 * Writes the lock's value at the lock key: an ephemeral node of the holder's
 * session, so it goes with the holder; a key that has children (an ephemeral
 * node cannot) holds it as a plain value instead.
 */
async function showValue(
  host: ZkLockHost,
  session: ZkSession,
  keyPath: string,
  value: Uint8Array,
  signal: AbortSignal,
): Promise<{ ephemeral: boolean; czxid: number }> {
  const data = encodeValue(value);
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await host.createNode(session, keyPath, data, EPHEMERAL, signal);
      const stat = await session.exists(signal, keyPath);
      return { ephemeral: true, czxid: stat?.czxid ?? 0 };
    } catch (error) {
      if (!isRc(error, ZK.NODEEXISTS)) throw error;
    }
    const stat = await host.main.exists(signal, keyPath);
    if (!stat) continue;
    if (stat.numChildren > 0) {
      await host.main.set(signal, keyPath, data, -1);
      return { ephemeral: false, czxid: stat.czxid };
    }
    // Left over (a value stored at the lock key, or a holder that lost it): the lock owns this key.
    await host.main.remove(signal, keyPath, stat.version).catch((error) => {
      if (!isRc(error, ZK.NONODE) && !isRc(error, ZK.BADVERSION)) throw error;
    });
  }
  throw new Error(`could not write the lock value at ${keyPath}`);
}
