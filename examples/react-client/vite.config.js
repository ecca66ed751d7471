import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` serves the app with hot reload and forwards the API and
// /config.json to the Express app (EXPRESS_URL, default http://127.0.0.1:3000).
const express = process.env.EXPRESS_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  build: {
    target: 'es2022', // top-level await in main.jsx
  },
  server: {
    host: '127.0.0.1',
    proxy: {
      '/api': express,
      '/config.json': express,
    },
  },
  test: {
    environment: 'jsdom',
    // Browser end-to-end specs live in examples/e2e and run under node --test.
    include: ['src/**/*.test.{js,jsx,ts,tsx}'],
    restoreMocks: true,
  },
});
