import { serversGlobalSetup } from '@kv/test-servers';

// One Consul agent for the whole run (unless KV_CONSUL_ENDPOINTS or `cli up` provides one); tests that need a
// private agent (restart, ACL, TLS, faults) launch their own.
export default serversGlobalSetup(['consul']);
