/**
 * The worker-cluster scenarios again, against the Kafka 4.x broker of the test environment
 * (`npm run test-env -- up kafka4 cassandra`): Kafka 4.0 removed the protocol versions older
 * clients used (KIP-896), and the worker must work with the brokers users run today.
 */
import '../support/use-kafka4';
import './worker-cluster.test';
