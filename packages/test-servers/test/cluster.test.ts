import { Etcd3 } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { launchConsulCluster, launchEtcdCluster, launchZooKeeperEnsemble, zkMode } from '../src/index.js';
import { httpRequest } from '../src/probes.js';
import { ZooKeeper, zkConnect } from './helpers.js';

describe('launcher: 3-member etcd cluster', () => {
  it('keeps serving with one member stopped; the member catches up when started again', async () => {
    const cluster = await launchEtcdCluster();
    try {
      expect(cluster.endpoints).toHaveLength(3);
      const [m1, m2, m3] = cluster.members as [
        (typeof cluster.members)[0],
        (typeof cluster.members)[0],
        (typeof cluster.members)[0],
      ];
      await m1.stop();
      const rest = new Etcd3({ hosts: [...m2.urls, ...m3.urls], dialTimeout: 5000 });
      await rest.put('while-down').value('yes');
      rest.close();
      await m1.start();
      const one = new Etcd3({ hosts: m1.urls, dialTimeout: 5000 });
      expect(await one.get('while-down').string()).toBe('yes');
      one.close();
    } finally {
      await cluster.dispose();
    }
  });
});

describe('launcher: 3-member ZooKeeper ensemble', () => {
  it('keeps serving with one member frozen; the member rejoins after thaw', async () => {
    const ensemble = await launchZooKeeperEnsemble();
    try {
      const modes = await Promise.all(ensemble.endpoints.map((e) => zkMode(e)));
      expect(modes.filter((m) => m === 'leader')).toHaveLength(1);
      expect(modes.filter((m) => m === 'follower')).toHaveLength(2);
      const [m1, m2, m3] = ensemble.members as [
        (typeof ensemble.members)[0],
        (typeof ensemble.members)[0],
        (typeof ensemble.members)[0],
      ];
      m1.freeze();
      try {
        // If m1 led, m2 and m3 elect a new leader first (bounded by syncLimit and the client's waits).
        const client = await zkConnect([...m2.endpoints, ...m3.endpoints].join(','));
        try {
          await client.create('/while-frozen', 'yes', ZooKeeper.constants.ZOO_PERSISTENT);
          const [, data] = await client.get('/while-frozen', false);
          expect(String(data)).toBe('yes');
        } finally {
          client.close();
        }
      } finally {
        m1.thaw();
      }
      await m1.waitReady(60_000);
      expect(['leader', 'follower']).toContain(await zkMode(m1.endpoints[0] as string));
    } finally {
      await ensemble.dispose();
    }
  });
});

describe('launcher: 3-server Consul cluster', () => {
  it('elects one leader; keeps serving with one server stopped; the server catches up when started again', async () => {
    const cluster = await launchConsulCluster();
    try {
      expect(cluster.endpoints).toHaveLength(3);
      const [m1, m2] = cluster.members as [(typeof cluster.members)[0], (typeof cluster.members)[0]];
      const peers = JSON.parse((await httpRequest(`${m2.urls[0]}/v1/status/peers`)).body) as string[];
      expect(peers).toHaveLength(3);
      await m1.stop();
      // If m1 led, the others elect a new leader first: a write forwarded meanwhile fails (HTTP 500).
      const deadline = performance.now() + 30_000;
      let put = { status: 0, body: '' };
      while (put.body.trim() !== 'true' && performance.now() < deadline) {
        put = await httpRequest(`${m2.urls[0]}/v1/kv/while-down`, {
          method: 'PUT',
          body: 'yes',
          timeoutMs: 15_000,
        });
        if (put.status >= 500) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(put.body.trim()).toBe('true');
      await m1.start();
      const got = await httpRequest(`${m1.urls[0]}/v1/kv/while-down?raw`, { timeoutMs: 15_000 });
      expect(got.body).toBe('yes');
    } finally {
      await cluster.dispose();
    }
  });
});
