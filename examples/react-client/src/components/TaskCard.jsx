import { isTerminal } from '@celery-pushserver/client';
import { useTaskStatus } from '@celery-pushserver/react';
import { describeError, describeResult, labelFor } from '../taskKinds.js';
import { FanoutProgress } from './FanoutProgress.jsx';
import { ProgressBar } from './ProgressBar.jsx';
import { StateBadge } from './StateBadge.jsx';

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function Outcome({ kind, task }) {
  if (task.state === 'SUCCESS') {
    const described = describeResult(kind, task);
    if (!described) return <p className="outcome outcome--success">Done.</p>;
    if (described.raw !== undefined) {
      return <pre className="outcome outcome--raw" data-testid="result">{described.raw}</pre>;
    }
    return (
      <div className="outcome outcome--success" data-testid="result">
        <p className="outcome__headline">{described.headline}</p>
        {described.details.length > 0 && (
          <dl className="outcome__details">
            {described.details.map(([label, value]) => (
              <div key={label}><dt>{label}</dt><dd>{value}</dd></div>
            ))}
          </dl>
        )}
        {described.bars && (
          <ul className="outcome__bars">
            {described.bars.map((bar) => (
              <li key={bar.label}>
                <span className="outcome__bar-label">{bar.label}</span>
                <span className="outcome__bar"><span style={{ width: `${bar.value * 100}%` }} /></span>
                <span className="outcome__bar-value">{bar.text}</span>
              </li>
            ))}
          </ul>
        )}
      </div>
    );
  }
  if (['FAILURE', 'RETRY', 'REVOKED', 'REJECTED'].includes(task.state)) {
    const error = describeError(task);
    const title = { FAILURE: 'Failed', RETRY: 'Attempt failed, retrying', REVOKED: 'Cancelled', REJECTED: 'Rejected by the worker' }[task.state];
    return (
      <div className={`outcome outcome--${task.state.toLowerCase()}`} data-testid="error" role={task.state === 'FAILURE' ? 'alert' : undefined}>
        <p className="outcome__headline">{title}</p>
        {error && (
          <p className="outcome__message">
            {error.type && <><code>{error.type}</code>: </>}
            {error.message}
          </p>
        )}
        {task.traceback && (
          <details className="outcome__traceback">
            <summary>Traceback</summary>
            <pre>{task.traceback}</pre>
          </details>
        )}
      </div>
    );
  }
  return null;
}

/** One task in the activity list, kept live by useTaskStatus. */
export function TaskCard({ id, token, kind, createdAt, onDismiss }) {
  const { task: known, error } = useTaskStatus(id, { token });
  const task = known ?? { task_id: id, state: 'PENDING', progress: null };
  const done = isTerminal(task.state);
  const meta = [
    `Started ${clock(createdAt / 1000)}`,
    task.retries ? `${task.retries} ${task.retries === 1 ? 'retry' : 'retries'}` : null,
    typeof task.runtime === 'number' ? `ran ${task.runtime < 1 ? `${Math.round(task.runtime * 1000)} ms` : `${task.runtime.toFixed(1)} s`}` : null,
    task.worker ? `on ${task.worker}` : null,
  ].filter(Boolean);

  return (
    <article
      className={`task-card task-card--${task.state.toLowerCase()}`}
      data-testid="task-card"
      data-task-id={id}
      data-kind={kind}
      data-state={task.state}
      aria-busy={!done}
    >
      <header className="task-card__header">
        <div className="task-card__title">
          <h3>{labelFor(kind)}</h3>
          <code className="task-card__id" title={id}>{id.slice(0, 8)}</code>
        </div>
        <StateBadge state={task.state} />
        {onDismiss && (
          <button type="button" className="task-card__dismiss" onClick={() => onDismiss(id)} aria-label={`Remove ${labelFor(kind)} from the list`}>
            ×
          </button>
        )}
      </header>
      {kind === 'webhooks' ? <FanoutProgress workflowId={id} token={token} /> : null}
      {kind !== 'webhooks' && (!done || task.state === 'SUCCESS') ? <ProgressBar state={task.state} progress={task.progress} /> : null}
      <Outcome kind={kind} task={task} />
      {error && (
        <p className="task-card__warning" role="alert">
          Live updates stopped: {error.message}
        </p>
      )}
      <footer className="task-card__meta">{meta.join(' · ')}</footer>
    </article>
  );
}
