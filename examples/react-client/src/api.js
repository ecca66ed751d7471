// Starting tasks through the Express app: POST /api/tasks/:name → {task_id, token}.

export class DispatchError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'DispatchError';
    this.status = status;
    this.code = code;
  }
}

/** Start task `kind` (a route name such as 'resize-image') with `body`. */
export async function startTask(kind, body = {}, { fetchImpl = globalThis.fetch } = {}) {
  let res;
  try {
    res = await fetchImpl(`/api/tasks/${encodeURIComponent(kind)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new DispatchError(0, 'network', 'Could not reach the server. Check your connection and try again.');
  }
  let payload = null;
  try {
    payload = await res.json();
  } catch {
    // not JSON: handled below
  }
  if (res.ok && payload?.task_id && payload?.token) return payload;
  const code = payload?.error?.code ?? 'error';
  const message = code === 'broker_unavailable'
    ? 'The task queue is unavailable right now. Try again in a few seconds.'
    : payload?.error?.message ?? `Request failed (HTTP ${res.status}).`;
  throw new DispatchError(res.status, code, message);
}
