import { defineConfig } from 'vitest/config';

// Against a real Redis, Celery worker and `pushserver serve` (needs the repo's .venv).
export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/integration/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
