import { serversGlobalSetup } from '@kv/test-servers';

// One ZooKeeper for the whole run (unless KV_ZOOKEEPER_ENDPOINTS or `cli up` provides one); tests that
// break a server (faults, ACLs, session expiry) launch their own.
export default serversGlobalSetup(['zookeeper']);
