/**
 * The database's layout, `PRAGMA user_version`. 0: the first released layout
 * (the change log's sequence from `AUTOINCREMENT`, its bytes counted in a
 * `log_meta` row, fencing tokens in a `fencing` table: four pages written by
 * every commit). 1: a write touches only the key's page and the log's last
 * page: the sequence is the log's own rowid (its newest row is never
 * trimmed), each log row carries the running total of bytes logged, and a
 * fencing token is the sequence of the put that took the lock.
 */
export const SCHEMA_VERSION = 1;

/** Bytes a change-log row is counted as: key and value bytes plus a row's overhead. */
const LOG_ROW_OVERHEAD = 16;
export const LOG_ROW_SIZE = `length(CAST(key AS BLOB)) + COALESCE(length(value), 0) + ${LOG_ROW_OVERHEAD}`;
export const logRowSize = (key: string, value: Uint8Array | null) =>
  Buffer.byteLength(key) + (value?.byteLength ?? 0) + LOG_ROW_OVERHEAD;

/**
 * A log row no watch matches: SQLite orders every TEXT before every BLOB, and
 * the widest watched range ends at a blob `X'FF'` (exclusive).
 */
const MARKER_KEY = "X'FF'";

const TABLES = `
CREATE TABLE IF NOT EXISTS kv (
  key        TEXT PRIMARY KEY,
  value      BLOB NOT NULL,
  version    INTEGER NOT NULL,
  expires_at INTEGER,
  owner      TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
  seq   INTEGER PRIMARY KEY,
  key   TEXT NOT NULL,
  value BLOB,
  total INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
  key        TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lock_waiters (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  key        TEXT NOT NULL,
  holder     TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lock_waiters_key ON lock_waiters (key, id);
`;

/**
 * The part of a better-sqlite3 connection the schema code uses (typed here, so
 * this module's declarations do not need better-sqlite3's types).
 */
interface Connection {
  pragma(source: string, options?: { simple?: boolean }): unknown;
  exec(source: string): unknown;
  prepare(source: string): { get(...params: unknown[]): unknown; all(...params: unknown[]): unknown[] };
  transaction(fn: () => void): { immediate(): void };
}

/** Thrown for a file of a newer layout than this version knows. */
export class NewerSchemaError extends Error {}

/**
 * Brings the file to `SCHEMA_VERSION`: creates it, or migrates a file of an
 * older layout in one transaction (its keys, versions, log and locks kept;
 * sequences and fencing tokens go on above every one given before). Opening a
 * current file reads one pragma and writes nothing.
 */
export function ensureSchema(db: Connection): void {
  const version = () => db.pragma('user_version', { simple: true }) as number;
  if (version() === SCHEMA_VERSION) return;
  if (version() > SCHEMA_VERSION) throw new NewerSchemaError(`layout ${version()}`);
  db.transaction(() => {
    // Another process may have done it while this one waited for the write lock.
    const found = version();
    if (found === SCHEMA_VERSION) return;
    if (found > SCHEMA_VERSION) throw new NewerSchemaError(`layout ${found}`);
    migrateFromFirstLayout(db);
    db.exec(TABLES);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

const tableExists = (db: Connection, name: string) =>
  db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;

const maxOf = (db: Connection, sql: string): number =>
  (db.prepare(sql).get() as { n: number | null } | undefined)?.n ?? 0;

/** Layout 0 to 1: the log is copied with running totals; log_meta and fencing go. */
function migrateFromFirstLayout(db: Connection): void {
  if (!tableExists(db, 'changes')) return; // a new file
  const hasTotal = (db.prepare('PRAGMA table_info(changes)').all() as { name: string }[]).some(
    (column) => column.name === 'total',
  );
  if (hasTotal) return;
  // Every sequence and token handed out so far: the next ones must be above all of them.
  let floor = Math.max(
    maxOf(db, 'SELECT MAX(seq) AS n FROM changes'),
    tableExists(db, 'kv') ? maxOf(db, 'SELECT MAX(version) AS n FROM kv') : 0,
    tableExists(db, 'sqlite_sequence')
      ? maxOf(db, "SELECT MAX(seq) AS n FROM sqlite_sequence WHERE name = 'changes'")
      : 0,
  );
  if (tableExists(db, 'fencing')) floor = Math.max(floor, maxOf(db, 'SELECT MAX(token) AS n FROM fencing'));
  db.exec(`
    CREATE TABLE changes_next (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB, total INTEGER NOT NULL);
    INSERT INTO changes_next (seq, key, value, total)
      SELECT seq, key, value, SUM(${LOG_ROW_SIZE}) OVER (ORDER BY seq) FROM changes ORDER BY seq;
  `);
  const newest = db.prepare('SELECT seq, total FROM changes_next ORDER BY seq DESC LIMIT 1').get() as
    | { seq: number; total: number }
    | undefined;
  if ((newest?.seq ?? 0) < floor) {
    // The log's newest row carries the sequence on: keep one at the floor (no watch matches it).
    db.exec(
      `INSERT INTO changes_next (seq, key, value, total) VALUES (${floor}, ${MARKER_KEY}, NULL, ${(newest?.total ?? 0) + 1 + LOG_ROW_OVERHEAD})`,
    );
  }
  db.exec(`
    DROP TABLE changes;
    ALTER TABLE changes_next RENAME TO changes;
    DROP TABLE IF EXISTS log_meta;
    DROP TABLE IF EXISTS fencing;
  `);
}
