// Preloaded (NODE_OPTIONS=--require) when the tests run on another Node
// version: better-sqlite3's native module in node_modules is built for the
// Node the workspace was installed with, so its load is pointed at the copy
// built for this Node's ABI ($KV_BETTER_SQLITE3_BINARY). Test tooling only.
const path = process.env.KV_BETTER_SQLITE3_BINARY;
if (path) {
  const dlopen = process.dlopen;
  process.dlopen = function (module, filename, ...rest) {
    const target = String(filename).endsWith('better_sqlite3.node') ? path : filename;
    return dlopen.call(this, module, target, ...rest);
  };
}
