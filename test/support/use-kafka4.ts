/**
 * Imported first by the `*-kafka4.test.ts` files: selects the environment's Kafka 4.x broker
 * for the scenarios imported after it (see selectedKafkaServer in env.ts).
 */
process.env.ABACUS_TEST_KAFKA_SERVER = 'kafka4';
