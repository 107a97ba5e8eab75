// Runs one SQL statement in an in-memory DuckDB and prints {columns, types, rows} as JSON
// (values as DuckDB's JSON conversion gives them: BIGINT as strings). Used by the tests as a
// reader independent of the worker's own Parquet code: node duckdb-query.cjs "SELECT ...".
// NODE_PATH must hold the node_modules that scripts/stack.sh installs @duckdb/node-api into.
const { DuckDBInstance } = require('@duckdb/node-api');

(async () => {
  const sql = process.argv[2];
  if (!sql) throw new Error('usage: node duckdb-query.cjs "SQL"');
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const r = await conn.runAndReadAll(sql);
  process.stdout.write(JSON.stringify({
    columns: r.columnNames(),
    types: r.columnTypes().map((t) => t.toString()),
    rows: r.getRowObjectsJson(),
  }) + '\n');
})().catch((err) => {
  process.stderr.write(`duckdb: ${err.message}\n`);
  process.exit(1);
});
