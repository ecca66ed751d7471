import { useCallback, useEffect, useState } from 'react';
import { startTask } from './api.js';
import { ConnectionIndicator } from './components/ConnectionIndicator.jsx';
import { DiagnosticsForm, PredictForm, ResizeImageForm, WebhooksForm, WelcomeEmailForm } from './components/LaunchForms.jsx';
import { TaskCard } from './components/TaskCard.jsx';

const STORAGE_KEY = 'celery-pushserver.tasks';
const MAX_TASKS = 50;

// The list survives a reload (tokens stay valid for their TTL): the page
// re-subscribes and the snapshots bring each task up to date.
function loadTasks() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? '[]');
    return Array.isArray(saved) ? saved.filter((t) => t?.id && t?.token && t?.kind) : [];
  } catch {
    return [];
  }
}

export default function App({ start = startTask }) {
  const [tasks, setTasks] = useState(loadTasks);

  useEffect(() => {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(tasks));
    } catch {
      // storage full or disabled: the list just won't survive a reload
    }
  }, [tasks]);

  const onStart = useCallback(async (kind, body) => {
    const { task_id: id, token } = await start(kind, body);
    setTasks((list) => [{ id, token, kind, createdAt: Date.now() }, ...list].slice(0, MAX_TASKS));
  }, [start]);

  const dismiss = useCallback((id) => setTasks((list) => list.filter((t) => t.id !== id)), []);
  const clearAll = useCallback(() => setTasks([]), []);

  return (
    <div className="app">
      <header className="topbar">
        <div className="topbar__brand">
          <span className="topbar__logo" aria-hidden="true">◆</span>
          <div>
            <h1>Task console</h1>
            <p>Celery tasks with live status, pushed over Socket.IO</p>
          </div>
        </div>
        <ConnectionIndicator />
      </header>

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
    </div>
  );
}
