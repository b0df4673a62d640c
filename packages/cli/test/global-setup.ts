import { serversGlobalSetup } from '@kv/test-servers';

// One etcd and one Redis for the whole run (unless KV_*_ENDPOINTS or `cli up` provides them): the
// copy, lock and dump tests run the binary against them.
export default serversGlobalSetup(['etcd', 'redis']);
