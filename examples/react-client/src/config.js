// Where the pushserver lives. First match wins:
//   1. window.PUSHSERVER_URL            (set by a <script> in a server-rendered page)
//   2. import.meta.env.VITE_PUSHSERVER_URL (baked in at build time)
//   3. GET /config.json → {pushserverUrl} (served by the Express app, read at run time)
//   4. the page's own origin            (pushserver behind the same reverse proxy)

export async function resolvePushserverUrl({ fetchImpl = globalThis.fetch, win = globalThis.window } = {}) {
  if (win?.PUSHSERVER_URL) return String(win.PUSHSERVER_URL);
  const built = import.meta.env?.VITE_PUSHSERVER_URL;
  if (built) return built;
  try {
    const res = await fetchImpl('/config.json', { headers: { accept: 'application/json' } });
    if (res.ok) {
      const config = await res.json();
      if (config?.pushserverUrl) return String(config.pushserverUrl);
    }
  } catch {
    // no Express in front (e.g. a static host): fall through
  }
  return win?.location?.origin ?? 'http://127.0.0.1:8000';
}
