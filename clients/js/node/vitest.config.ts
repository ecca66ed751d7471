import { defineConfig } from 'vitest/config';

// Unit tests only; the integration suite runs under `node --test` against real processes.
export default defineConfig({ test: { include: ['test/unit/**/*.test.ts'] } });
