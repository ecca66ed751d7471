import { useCallback, useEffect, useState } from 'react';
import * as defaultApi from './api.js';
import { ConnectionIndicator } from './components/ConnectionIndicator.jsx';
import { DiagnosticsForm, PredictForm, ResizeImageForm, WebhooksForm, WelcomeEmailForm } from './components/LaunchForms.jsx';
import { SignInForm } from './components/SignInForm.jsx';
import { TaskCard } from './components/TaskCard.jsx';

const STORAGE_PREFIX = 'celery-pushserver.tasks.';
const MAX_TASKS = 50;

// The list survives a reload: the page re-subscribes, the task client asks
// Express for a fresh token where the stored one has expired, and the
// snapshots bring each task up to date.
function loadTasks(userId) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_PREFIX + userId) ?? '[]');
    return Array.isArray(saved) ? saved.filter((t) => t?.id && t?.token && t?.kind) : [];
  } catch {
    return [];
  }
}

function TopBar({ user, onSignOut }) {
  return (
    <header className="topbar">
      <div className="topbar__brand">
        <span className="topbar__logo" aria-hidden="true">◆</span>
        <div>
          <h1>Task console</h1>
          <p>Celery tasks with live status, pushed over Socket.IO</p>
        </div>
      </div>
      <div className="topbar__session">
        {user && (
          <>
            <span className="topbar__user" data-testid="signed-in-as">{user.username}</span>
            <button type="button" className="button button--ghost" onClick={onSignOut}>Sign out</button>
          </>
        )}
        <ConnectionIndicator />
      </div>
    </header>
  );
}

function Console({ user, api, onSessionLost }) {
  const [tasks, setTasks] = useState(() => loadTasks(user.id));

  useEffect(() => {
    try {
      sessionStorage.setItem(STORAGE_PREFIX + user.id, JSON.stringify(tasks));
    } catch {
      // storage full or disabled: the list just won't survive a reload
    }
  }, [user.id, tasks]);

  const onStart = useCallback(async (kind, body) => {
    try {
      const { task_id: id, token } = await api.startTask(kind, body);
      setTasks((list) => [{ id, token, kind, createdAt: Date.now() }, ...list].slice(0, MAX_TASKS));
    } catch (err) {
      if (err.status === 401) onSessionLost();
      throw err;
    }
  }, [api, onSessionLost]);

  const dismiss = useCallback((id) => setTasks((list) => list.filter((t) => t.id !== id)), []);
  const clearAll = useCallback(() => setTasks([]), []);

  return (
    <main className="layout">
      <section className="panel panel--launch" aria-labelledby="launch-heading">
        <h2 id="launch-heading">Start a task</h2>
        <ResizeImageForm onStart={onStart} />
        <PredictForm onStart={onStart} />
        <WelcomeEmailForm onStart={onStart} />
        <WebhooksForm onStart={onStart} />
        <DiagnosticsForm onStart={onStart} />
      </section>

      <section className="panel panel--activity" aria-labelledby="activity-heading">
        <div className="panel__heading">
          <h2 id="activity-heading">Activity</h2>
          {tasks.length > 0 && (
            <button type="button" className="button button--ghost" onClick={clearAll}>Clear list</button>
          )}
        </div>
        {tasks.length === 0 ? (
          <div className="empty">
            <p className="empty__title">No tasks yet</p>
            <p>Start one on the left: its progress and result appear here as they happen, with no page polling.</p>
          </div>
        ) : (
          <div className="task-list" data-testid="task-list">
            {tasks.map((t) => (
              <TaskCard key={t.id} id={t.id} token={t.token} kind={t.kind} createdAt={t.createdAt} onDismiss={dismiss} />
            ))}
          </div>
        )}
      </section>
    </main>
  );
}

/** The page: a sign-in form until there is a session, then the task console. */
export default function App({ api = defaultApi }) {
  const [user, setUser] = useState(undefined); // undefined while asking /api/me
  const [notice, setNotice] = useState(null);

  useEffect(() => {
    let live = true;
    api.currentUser().then((u) => { if (live) setUser(u); }, () => { if (live) setUser(null); });
    return () => { live = false; };
  }, [api]);

  const onSignedIn = useCallback((u) => { setNotice(null); setUser(u); }, []);
  const onSessionLost = useCallback(() => {
    setNotice('Your session has ended: sign in again.');
    setUser(null);
  }, []);
  const onSignOut = useCallback(async () => {
    try {
      await api.signOut();
    } finally {
      setUser(null);
    }
  }, [api]);

  return (
    <div className="app">
      <TopBar user={user} onSignOut={onSignOut} />
      {user === undefined && <p className="loading" aria-busy="true">Loading…</p>}
      {user === null && (
        <main className="layout layout--single">
          <SignInForm signIn={api.signIn} register={api.register} onSignedIn={onSignedIn} notice={notice} />
        </main>
      )}
      {user && <Console key={user.id} user={user} api={api} onSessionLost={onSessionLost} />}
    </div>
  );
}
