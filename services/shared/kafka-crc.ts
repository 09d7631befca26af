/**
 * kafkajs computes the CRC-32C of every record batch it produces in JavaScript, a
 * byte at a time: ~10% of the agent's CPU at full rate (a 128 KiB batch per 1,024
 * events). kafkajs loads its checksum as a module of its own and its maintainers
 * invite swapping it (tulios/kafkajs#372), so this puts @node-rs/crc32's
 * hardware-accelerated crc32c in that module's place before kafkajs loads.
 *
 * Import this before anything that imports kafkajs (services/shared/kafka.ts and
 * services/agent/kafka-sink.ts do, first). The broker checks every batch's CRC, so
 * a wrong checksum would fail every produce in the integration tests.
 */
import { createRequire, Module } from 'node:module';
import { crc32c } from '@node-rs/crc32';

const require = createRequire(import.meta.url);
const KAFKAJS_CRC32C_MODULE = require.resolve('kafkajs/src/protocol/recordBatch/crc32C/index.js');

/** Unsigned CRC-32C (Castagnoli), what kafkajs's own module returns. */
export const fastCrc32c = (buf: Buffer): number => crc32c(buf) >>> 0;

if (!require.cache[KAFKAJS_CRC32C_MODULE]) {
  const m = new Module(KAFKAJS_CRC32C_MODULE);
  m.filename = KAFKAJS_CRC32C_MODULE;
  m.loaded = true;
  m.exports = fastCrc32c;
  require.cache[KAFKAJS_CRC32C_MODULE] = m;
}

/** Whether kafkajs uses fastCrc32c (false when kafkajs was loaded before this module). */
export const kafkajsUsesFastCrc = (): boolean => require.cache[KAFKAJS_CRC32C_MODULE]?.exports === fastCrc32c;
