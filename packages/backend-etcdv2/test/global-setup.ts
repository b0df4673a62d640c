import { serversGlobalSetup } from '@kv/test-servers';

// One etcd for the whole run (unless KV_ETCD_ENDPOINTS or `cli up` provides one); tests that need a
// private server (auth, TLS, restarts) launch their own.
export default serversGlobalSetup(['etcd']);
