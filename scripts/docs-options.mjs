// Rewrites the README's options table from services/shared/config.ts (via the built CLI).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
const table = execFileSync(process.execPath, ['dist/services/cli/main.js', 'options'], { encoding: 'utf8' }).trim();
const readme = readFileSync('README.md', 'utf8');
const next = readme.replace(/(<!-- options:begin[^>]*-->\n)[\s\S]*?(\n<!-- options:end -->)/, `$1${table}$2`);
writeFileSync('README.md', next);
