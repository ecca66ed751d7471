// What the page knows about each kind of task: its label and how to show its result.

export const TASK_KINDS = Object.freeze({
  'welcome-email': { label: 'Welcome email', task: 'workers.tasks.send_welcome_email' },
  'resize-image': { label: 'Resize & watermark', task: 'workers.tasks.resize_and_watermark' },
  predict: { label: 'Iris classification', task: 'workers.tasks.predict' },
  webhooks: { label: 'Webhook fan-out', task: 'workers.tasks.fanout_webhooks' },
  'demo-progress': { label: 'Progress demo', task: 'workers.tasks.demo_progress' },
  fail: { label: 'Simulated failure', task: 'workers.tasks.fail' },
});

export function labelFor(kind) {
  return TASK_KINDS[kind]?.label ?? kind;
}

function fileName(path) {
  return typeof path === 'string' ? path.split(/[\\/]/).pop() : '';
}

function bytes(n) {
  if (typeof n !== 'number') return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function percent(p) {
  return `${(p * 100).toFixed(1)}%`;
}

/**
 * Describe a SUCCESS TaskState's result as `{headline, details: [[label, value], ...], bars?}`
 * for the task card. `result_format` says what `result` is: the returned value as JSON
 * (`json`), Celery's repr string (`repr`, shown as it is), or left out as too large.
 * Unknown shapes come back as `{raw}`.
 */
export function describeResult(kind, { result, result_format: format } = {}) {
  if (format === 'too_large') return { headline: 'Done. The result is too large to show here.', details: [] };
  if (format === 'repr') return typeof result === 'string' ? { raw: result } : null;
  if (result === null || result === undefined) return null;
  const isObject = typeof result === 'object' && !Array.isArray(result);
  try {
    switch (isObject || kind === 'demo-progress' ? kind : null) {
      case 'welcome-email':
        if (result.delivered_to === 'smtp') return { headline: `Sent to ${result.username ?? result.user_id} by SMTP`, details: [] };
        return {
          headline: `Welcome email for ${result.username ?? result.user_id} written to the outbox`,
          details: [['File', fileName(result.delivered_to)]],
        };
      case 'resize-image':
        return {
          headline: `Image resized to ${result.width} × ${result.height} px`,
          details: [['File', fileName(result.path)], ['Size', bytes(result.bytes)]],
        };
      case 'predict': {
        const probabilities = Object.entries(result.probabilities ?? {}).sort((a, b) => b[1] - a[1]);
        const top = result.probabilities?.[result.label];
        return {
          headline: `Iris ${result.label}${typeof top === 'number' ? ` (${percent(top)} confidence)` : ''}`,
          details: [],
          bars: probabilities.map(([label, p]) => ({ label, value: p, text: percent(p) })),
        };
      }
      case 'webhooks': {
        const count = result.task_ids?.length ?? 0;
        return {
          headline: `Dispatched ${count} webhook deliver${count === 1 ? 'y' : 'ies'}`,
          details: [['Group', result.group_id]],
        };
      }
      case 'demo-progress':
        return { headline: `Completed ${result} step${result === 1 ? '' : 's'}`, details: [] };
      default:
        break;
    }
  } catch {
    // an unexpected shape: show it raw below
  }
  return { raw: typeof result === 'string' ? result : JSON.stringify(result, null, 2) };
}

/**
 * A failed task's error for display: `exception_type` names the class; the message is
 * the exception string without its `Type(...)` wrapper (and the quotes of a single message).
 */
export function describeError({ exception, exception_type: type } = {}) {
  if (!exception) return type ? { type, message: '' } : null;
  let message = String(exception);
  if (type && message.startsWith(`${type}(`) && message.endsWith(')')) {
    message = message.slice(type.length + 1, -1);
    const quote = message[0];
    if ((quote === "'" || quote === '"') && message.length > 1 && message.endsWith(quote)
        && !message.slice(1, -1).includes(quote)) {
      message = message.slice(1, -1);
    }
  }
  return { type: type ?? null, message };
}
