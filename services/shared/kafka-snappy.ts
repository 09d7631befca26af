/**
 * Snappy for kafkajs, which ships only gzip and looks other codecs up in
 * CompressionCodecs: the native `snappy` binding (napi-rs) in that slot. Batches
 * are compressed as one raw snappy block, which brokers accept (snappy-java reads
 * unframed input); decompression also reads the xerial framing that Java
 * producers write. Importing this module registers the codec; the agent and the
 * correlator both import it (services/shared/kafka.ts), so either side can read
 * what the other wrote whatever HOPTRACE_KAFKA_COMPRESSION is.
 */
import kafkajs from 'kafkajs';
import { compressSync, uncompressSync } from 'snappy';

/** snappy-java's stream header: magic, then version and compatible version (int32 each). */
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);
const XERIAL_HEADER = 16;

const raw = (b: Buffer): Buffer => uncompressSync(b, { asBuffer: true }) as Buffer;

export function snappyDecompress(buf: Buffer): Buffer {
  if (buf.length < XERIAL_HEADER || !buf.subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC)) return raw(buf);
  // Xerial framing: after the header, blocks of [int32 BE compressed size][snappy block].
  const parts: Buffer[] = [];
  for (let off = XERIAL_HEADER; off < buf.length; ) {
    if (off + 4 > buf.length) throw new Error(`snappy: xerial block header cut at byte ${off} of ${buf.length}`);
    const size = buf.readUInt32BE(off);
    off += 4;
    if (off + size > buf.length) throw new Error(`snappy: xerial block of ${size} bytes at byte ${off} runs past ${buf.length}`);
    parts.push(raw(buf.subarray(off, off + size)));
    off += size;
  }
  return Buffer.concat(parts);
}

export const snappyCodec = () => ({
  compress: async (encoder: { buffer: Buffer }): Promise<Buffer> => compressSync(encoder.buffer),
  decompress: async (buffer: Buffer): Promise<Buffer> => snappyDecompress(buffer),
});

// CommonJS: the default import is the object kafkajs looks codecs up in.
(kafkajs.CompressionCodecs as Record<number, unknown>)[kafkajs.CompressionTypes.Snappy] = snappyCodec;
