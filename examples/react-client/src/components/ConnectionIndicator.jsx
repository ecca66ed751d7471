import { useConnection } from '@celery-pushserver/react';

const LABELS = {
  connecting: 'Connecting…',
  connected: 'Connected',
  offline: 'Offline',
};

const HINTS = {
  connected: 'Task updates arrive live.',
  connecting: 'No live connection yet; retrying. Nothing is missed: tasks catch up when it is back.',
  offline: 'No network. Tasks keep running on the server and catch up when you are back online.',
};

/** A small status pill: is the page receiving live task updates? */
export function ConnectionIndicator() {
  const { status, error } = useConnection();
  const hint = [HINTS[status], error && status !== 'connected' ? `(${error})` : null].filter(Boolean).join(' ');
  return (
    <div className={`connection connection--${status}`} role="status" aria-live="polite" title={hint} data-testid="connection" data-status={status}>
      <span className="connection__dot" aria-hidden="true" />
      <span className="connection__label">{LABELS[status] ?? status}</span>
    </div>
  );
}
