import { auth, Client, types } from 'cassandra-driver';
import { RefRow, sortRows } from './reference';

/** A user name and password for a Cassandra node with PasswordAuthenticator. */
export interface CassandraLogin {
  readonly username: string;
  readonly password: string;
}

/** A plain driver client (independent of worker/io), logged in when `login` is given. */
export function cassandraClient(contactPoint: string, login?: CassandraLogin): Client {
  return new Client({
    contactPoints: [contactPoint],
    localDataCenter: 'datacenter1',
    socketOptions: { readTimeout: 20000 },
    ...(login === undefined ? {} : { authProvider: new auth.PlainTextAuthProvider(login.username, login.password) }),
  });
}

/** Reads a job's counts straight from Cassandra with the plain driver (independent of worker/io). */
export async function readCounts(contactPoint: string, keyspace: string, table: string, level: 'account' | 'customer', login?: CassandraLogin): Promise<RefRow[]> {
  const client = cassandraClient(contactPoint, login);
  await client.connect();
  try {
    const rows: RefRow[] = [];
    const cols = level === 'account' ? 'scope, statistic_id, granularity, facet, value, bucket, count, uniques' : 'scope, statistic_id, granularity, facet, value, bucket, count';
    const rs = await client.execute(`SELECT ${cols} FROM ${keyspace}.${table}`, [], { prepare: true, fetchSize: 5000, consistency: types.consistencies.one });
    for await (const r of rs) {
      const row: RefRow = {
        scope: r.get('scope') as string,
        statistic_id: r.get('statistic_id') as string,
        granularity: r.get('granularity') as RefRow['granularity'],
        facet: r.get('facet') as string,
        value: r.get('value') as string,
        bucket: (r.get('bucket') as Date).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        count: (r.get('count') as types.Long).toNumber(),
      };
      if (level === 'account') row.uniques = (r.get('uniques') as types.Long).toNumber();
      rows.push(row);
    }
    return sortRows(rows);
  } catch (err) {
    if (/unconfigured table|does not exist/i.test((err as Error).message)) return [];
    throw err;
  } finally {
    await client.shutdown();
  }
}

/** Drops a test keyspace (best effort). */
export async function dropKeyspace(contactPoint: string, keyspace: string, login?: CassandraLogin): Promise<void> {
  const client = cassandraClient(contactPoint, login);
  await client.connect();
  try {
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
  } finally {
    await client.shutdown();
  }
}
