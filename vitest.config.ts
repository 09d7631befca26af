import { defineConfig } from 'vitest/config';

// Integration and privileged suites share real services and the kernel: the test
// command runs them with --no-file-parallelism (see scripts/test.sh).
export default defineConfig({
  test: {
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ['default'],
    // Temporary files of a run live in one directory, removed at its end.
    globalSetup: ['test/global-tmp.ts'],
  },
});
