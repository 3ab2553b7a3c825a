/**
 * Which connection failures stop the worker (refused credentials, an untrusted broker
 * certificate) and which it retries (outages), built from the clients' own error classes.
 * The real servers' errors are exercised in test/integration/worker-secure.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errors as cassandraErrors } from 'cassandra-driver';
import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSSASLAuthenticationError } from 'kafkajs';
import { ConfigError, errorChain } from '../../common/errors';
import { resolveJobConfig } from '../../common/job-config';
import { cassandraCredentialsError } from '../../worker/io/cassandra-sink';
import { kafkaSetupError } from '../../worker/io/kafka-client';

const kafka = resolveJobConfig({ name: 'j', kafka: { brokers: ['b:9093'], topic: 't', tls: true, saslMechanism: 'scram-sha-512' } }).kafka!;

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('errorChain walks causes and per-host inner errors, once each', () => {
  const leaf = new Error('leaf');
  const hostErr = new Error('host');
  const mid = Object.assign(new Error('mid', { cause: leaf }), { innerErrors: { 'h:1': hostErr, 'h:2': leaf } });
  assert.deepEqual(errorChain(new Error('top', { cause: mid })).map((e) => e.message), ['top', 'mid', 'leaf', 'host']);
  assert.deepEqual(errorChain('not an error'), []);
});

test('Kafka: refused SASL credentials are fatal, also inside kafkajs retry wrappers, and name the Secret', () => {
  // kafkajs' typings omit the constructor's message argument that its code takes.
  const SaslError = KafkaJSSASLAuthenticationError as unknown as new (message: string) => Error;
  const sasl = new SaslError('SASL SCRAM SHA512 authentication failed: invalid credentials');
  for (const err of [sasl, new KafkaJSNumberOfRetriesExceeded(sasl, { retryCount: 8, retryTime: 5000, cause: sasl } as never)]) {
    const fatal = withEnv({ ABACUS_KAFKA_USERNAME: 'svc', ABACUS_KAFKA_PASSWORD: 'hunter2' }, () => kafkaSetupError(err, kafka));
    assert.ok(fatal instanceof ConfigError);
    assert.equal(fatal.field, 'ABACUS_KAFKA_USERNAME/ABACUS_KAFKA_PASSWORD');
    assert.match(fatal.message, /refused the scram-sha-512 credentials of user "svc".*spec\.source\.kafka\.sasl\.credentialsSecretRef/);
    assert.ok(!fatal.message.includes('hunter2'), 'never the password');
  }
});

test('Kafka: an unverifiable broker certificate is fatal and names the CA setting; outages are retried', () => {
  for (const code of ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED']) {
    const fatal = kafkaSetupError(new KafkaJSConnectionError('Connection error: nope', { broker: 'b:9093', code }), kafka);
    assert.equal(fatal?.field, 'kafka.tls', code);
    assert.match(fatal.message, /spec\.source\.kafka\.tls\.caSecretRef/);
  }
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', undefined]) {
    assert.equal(kafkaSetupError(new KafkaJSConnectionError('Connection error', { broker: 'b:9093', code }), kafka), undefined, String(code));
  }
  assert.equal(kafkaSetupError(new Error('anything else'), kafka), undefined);
});

test('Cassandra: wrong or missing credentials are fatal; "unable to perform authentication" is retried', () => {
  const hostErrors = (e: Error) => new cassandraErrors.NoHostAvailableError({ '127.0.0.1:9042': e });
  const wrong = withEnv({ ABACUS_CASSANDRA_USERNAME: 'svc', ABACUS_CASSANDRA_PASSWORD: 'hunter2' }, () =>
    cassandraCredentialsError(hostErrors(new cassandraErrors.AuthenticationError('Provided username svc and/or password are incorrect'))),
  );
  assert.equal(wrong?.field, 'ABACUS_CASSANDRA_USERNAME/ABACUS_CASSANDRA_PASSWORD');
  assert.match(wrong.message, /Cassandra refused the credentials of user "svc".*spec\.sink\.cassandra\.credentialsSecretRef/);
  assert.ok(!wrong.message.includes('hunter2'));

  for (const message of ['Host 127.0.0.1:9042 requires authentication, but no authenticator found in the options', 'Authentication provider not set']) {
    const none = cassandraCredentialsError(hostErrors(new cassandraErrors.AuthenticationError(message)));
    assert.match(none?.message ?? '', /requires a user name and password, and none were given/, message);
  }

  assert.equal(cassandraCredentialsError(hostErrors(new cassandraErrors.AuthenticationError('Unable to perform authentication: Cannot achieve consistency level QUORUM'))), undefined);
  assert.equal(cassandraCredentialsError(hostErrors(new Error('connect ECONNREFUSED 127.0.0.1:9042'))), undefined);
});
