// Health check for the local Kafka broker, used by deploy/local/infra.sh.
// Usage: node deploy/local/kafka-health.mjs HOST:PORT [TIMEOUT_MS]
// Exit 0 when a kafkajs admin client connects, the broker is in the cluster metadata and topics
// can be listed; exit 1 otherwise, with the reason on stderr.
//
// An open port is not enough: a KRaft broker accepts connections before it has joined the
// quorum and been unfenced, and only then can clients use it. Checking with kafkajs, the client
// the services use, also proves that this broker version still speaks kafkajs' protocol versions.
import kafkajs from 'kafkajs';

const { Kafka, logLevel } = kafkajs;
const [broker, timeoutArg] = process.argv.slice(2);
if (!broker || !/^[^:\s]+:\d+$/.test(broker)) {
  console.error('usage: node kafka-health.mjs HOST:PORT [TIMEOUT_MS]');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg ?? 5000);

// kafkajs may keep retrying a dead socket past our deadline; the answer is then "unhealthy".
const deadline = setTimeout(() => {
  console.error(`kafka ${broker}: no answer within ${timeoutMs} ms`);
  process.exit(1);
}, timeoutMs);

const admin = new Kafka({
  clientId: 'hoptrace-infra-health',
  brokers: [broker],
  connectionTimeout: Math.min(1000, timeoutMs),
  requestTimeout: timeoutMs,
  retry: { retries: 0 },
  logLevel: logLevel.NOTHING,
}).admin();

try {
  await admin.connect();
  const cluster = await admin.describeCluster();
  if (cluster.brokers.length === 0) throw new Error('cluster metadata lists no live broker yet');
  await admin.listTopics();
  clearTimeout(deadline);
  await admin.disconnect();
  process.exit(0);
} catch (err) {
  console.error(`kafka ${broker}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
