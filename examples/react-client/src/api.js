// The Express app's HTTP API (same origin; the session is an httpOnly cookie):
// accounts, dispatch (POST /api/tasks/:name → {task_id, token}), the user's
// task list and the nightly report (both from MongoDB), and token refresh.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Kept for callers of the dispatch-only API. */
export const DispatchError = ApiError;

async function request(method, url, body, { fetchImpl = globalThis.fetch } = {}) {
  let res;
  try {
    res = await fetchImpl(url, {
      method,
      credentials: 'same-origin',
      headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'Could not reach the server. Check your connection and try again.');
  }
  if (res.status === 204) return null;
  let payload = null;
  try {
    payload = await res.json();
  } catch {
    // not JSON: handled below
  }
  if (res.ok && payload) return payload;
  const code = payload?.error?.code ?? 'error';
  const message = {
    broker_unavailable: 'The task queue is unavailable right now. Try again in a few seconds.',
    database_unavailable: 'The database is unavailable right now. Try again in a few seconds.',
  }[code] ?? payload?.error?.message ?? `Request failed (HTTP ${res.status}).`;
  throw new ApiError(res.status, code, message);
}

/** The signed-in user, or null when there is no session. */
export async function currentUser(options) {
  try {
    return (await request('GET', '/api/me', undefined, options)).user;
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

/** Sign in; resolves to the user. */
export async function signIn(username, password, options) {
  return (await request('POST', '/api/login', { username, password }, options)).user;
}

/** Create an account (and a session); resolves to the user. */
export async function register(username, password, options) {
  return (await request('POST', '/api/register', { username, password }, options)).user;
}

export async function signOut(options) {
  await request('POST', '/api/logout', undefined, options);
}

/** Start task `kind` (a route name such as 'resize-image') with `body`; resolves to {task_id, token}. */
export async function startTask(kind, body = {}, options) {
  const payload = await request('POST', `/api/tasks/${encodeURIComponent(kind)}`, body, options);
  if (!payload?.task_id || !payload?.token) throw new ApiError(500, 'error', 'The server answered without a task id.');
  return payload;
}

/** The signed-in user's tasks, newest first: `[{id, kind, task, args_summary, state, created_at}]`. */
export async function listTasks(options) {
  return (await request('GET', '/api/tasks', undefined, options)).tasks;
}

/** The newest nightly report (`{generated_at, counts, total, archived, ...}`), or null before the first. */
export async function latestReport(options) {
  return (await request('GET', '/api/reports/latest', undefined, options)).report;
}

/** A fresh token for a task this user dispatched: the task client's `getToken`. */
export async function fetchTaskToken(taskId, options) {
  const { token } = await request('GET', `/api/tasks/${encodeURIComponent(taskId)}/token`, undefined, options);
  return token;
}
