// @ts-check
/** Prints the body of one HTTP GET (used to read workload counters inside a namespace). */
import http from 'node:http';

const url = process.argv[2];
if (!url) throw new Error('usage: get.js <url>');
const req = http.get(url, { timeout: 3000 }, (res) => {
  res.pipe(process.stdout);
  res.on('end', () => process.exit(res.statusCode === 200 ? 0 : 1));
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
