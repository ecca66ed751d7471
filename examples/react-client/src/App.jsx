import { useCallback, useEffect, useState } from 'react';
import * as defaultApi from './api.js';
import { ConnectionIndicator } from './components/ConnectionIndicator.jsx';
import { DiagnosticsForm, PredictForm, ResizeImageForm, WebhooksForm, WelcomeEmailForm } from './components/LaunchForms.jsx';
import { NightlyReport } from './components/NightlyReport.jsx';
import { SignInForm } from './components/SignInForm.jsx';
import { TaskCard } from './components/TaskCard.jsx';

const MAX_TASKS = 50;

// A task from the user's list in MongoDB (GET /api/tasks): no token yet, the
// task client asks Express for one (GET /api/tasks/:id/token) to subscribe.
function fromRecord(record) {
  return { id: record.id, kind: record.kind, createdAt: Date.parse(record.created_at) || Date.now() };
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

function Console({ api, onSessionLost }) {
  // The list lives in MongoDB, so it survives a reload (and a new browser):
  // each unfinished task gets its live status from pushserver again.
  const [tasks, setTasks] = useState([]);
  const [loadError, setLoadError] = useState(null);
  const [hidden, setHidden] = useState(() => new Set());

  useEffect(() => {
    let live = true;
    api.listTasks().then((records) => {
      if (!live) return;
      setTasks((started) => {
        // Keep anything started while the list was loading, once.
        const known = new Set(started.map((t) => t.id));
        return [...started, ...records.filter((r) => !known.has(r.id)).map(fromRecord)].slice(0, MAX_TASKS);
      });
    }, (err) => {
      if (!live) return;
      if (err.status === 401) onSessionLost();
      else setLoadError(err.message);
    });
    return () => { live = false; };
  }, [api, onSessionLost]);

  const onStart = useCallback(async (kind, body) => {
    try {
      const { task_id: id, token } = await api.startTask(kind, body);
      setTasks((list) => [{ id, token, kind, createdAt: Date.now() }, ...list].slice(0, MAX_TASKS));
    } catch (err) {
      if (err.status === 401) onSessionLost();
      throw err;
    }
  }, [api, onSessionLost]);

  // Hiding is for this page only: the records stay in MongoDB (the nightly report archives old ones).
  const dismiss = useCallback((id) => setHidden((ids) => new Set(ids).add(id)), []);
  const visible = tasks.filter((t) => !hidden.has(t.id));
  const clearAll = useCallback(() => setHidden(new Set(tasks.map((t) => t.id))), [tasks]);

  return (
    <main className="layout">
      <NightlyReport latestReport={api.latestReport} />
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
          {visible.length > 0 && (
            <button type="button" className="button button--ghost" onClick={clearAll}>Clear list</button>
          )}
        </div>
        {loadError && <p className="task-card__warning" role="alert">Could not load your tasks: {loadError}</p>}
        {visible.length === 0 ? (
          <div className="empty">
            <p className="empty__title">No tasks yet</p>
            <p>Start one on the left: its progress and result appear here as they happen, with no page polling.</p>
          </div>
        ) : (
          <div className="task-list" data-testid="task-list">
            {visible.map((t) => (
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
