// node examples/check.js <tollgate dev data dir>: one check against region eu.
import { readFileSync } from 'node:fs';
import { Client } from '@tollgate/sdk';

const ep = JSON.parse(readFileSync(`${process.argv[2]}/endpoints.json`, 'utf8'));
const client = new Client({
  endpoints: ep.regions.find((r) => r.name === 'eu').nodes.map((n) => n.check),
  caFile: ep.tls.ca,
  credential: readFileSync(ep.origin.app_credential_file, 'utf8').trim(),
});
const d = await client.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10' });
console.log(d.allowed, d.reason, 'answered by', d.answered_by);
client.close();
