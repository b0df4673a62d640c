import { serversGlobalSetup } from '@kv/test-servers';

// One Redis for the whole run (unless KV_REDIS_ENDPOINTS or `cli up` provides one); tests that need a
// private server (restart, ACL, notifications off) launch their own.
export default serversGlobalSetup(['redis']);
