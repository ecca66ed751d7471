import { useConnection } from '../useConnection.js';
import { CONNECTION } from '../taskSocket.js';

const LABELS = {
  [CONNECTION.IDLE]: 'Not connected',
  [CONNECTION.CONNECTING]: 'Connecting…',
  [CONNECTION.CONNECTED]: 'Connected',
  [CONNECTION.RECONNECTING]: 'Reconnecting…',
  [CONNECTION.OFFLINE]: 'Offline',
};

const HINTS = {
  [CONNECTION.CONNECTED]: 'Task updates arrive live.',
  [CONNECTION.RECONNECTING]: 'Lost the live connection; retrying. Nothing is missed: tasks catch up when it is back.',
  [CONNECTION.OFFLINE]: 'No network. Tasks keep running on the server and catch up when you are back online.',
};

/** A small status pill: is the page receiving live task updates? */
export function ConnectionIndicator({ client }) {
  const { status, error } = useConnection(client ? { client } : undefined);
  const hint = [HINTS[status], error && status !== CONNECTION.CONNECTED ? `(${error})` : null].filter(Boolean).join(' ');
  return (
    <div className={`connection connection--${status}`} role="status" aria-live="polite" title={hint} data-testid="connection" data-status={status}>
      <span className="connection__dot" aria-hidden="true" />
      <span className="connection__label">{LABELS[status] ?? status}</span>
    </div>
  );
}
