// @ts-check
/** `--name value` command-line flags for the workload scripts (they run without a build). */

/**
 * @param {string} name
 * @param {string} def
 * @returns {string}
 */
export function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  return v ?? def;
}

/**
 * @param {string} name
 * @param {number} def
 * @returns {number}
 */
export function intArg(name, def) {
  const raw = arg(name, String(def));
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: expected a non-negative integer, got ${raw}`);
  return n;
}

/** @param {Record<string, unknown>} fields */
export function log(fields) {
  process.stdout.write(`${JSON.stringify({ t: new Date().toISOString(), ...fields })}\n`);
}
