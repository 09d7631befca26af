import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import '../../services/shared/kafka.js';
import { fastCrc32c, kafkajsUsesFastCrc } from '../../services/shared/kafka-crc.js';

const require = createRequire(import.meta.url);
// kafkajs's own table-driven implementation (signed result), read directly from its file.
const original = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (b: Buffer) => number;

describe('kafkajs record batch checksum', () => {
  it('is the native crc32c once the Kafka module is loaded', () => {
    expect(kafkajsUsesFastCrc()).toBe(true);
  });

  it('equals kafkajs\'s own CRC-32C on known and random inputs', () => {
    expect(fastCrc32c(Buffer.from('123456789'))).toBe(0xe3069283); // the Castagnoli check value
    for (const n of [0, 1, 7, 64, 1000, 131_072]) {
      const b = randomBytes(n);
      expect(fastCrc32c(b), `${n} bytes`).toBe(original(b) >>> 0);
    }
  });
});
