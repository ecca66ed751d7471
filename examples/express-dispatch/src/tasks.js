// The tasks a browser may start, and how a request body becomes Celery args/kwargs.
//
// Only names in TASKS can be dispatched: the route parameter never reaches
// the broker as a task name, so a client cannot run arbitrary Celery tasks.

export class ValidationError extends Error {}

const MAX_IMAGE_B64_LENGTH = 14 * 1024 * 1024; // ~10 MB of image once decoded
const MAX_WATERMARK_LENGTH = 100;
const MAX_STEPS_DELAY = 60;
const MAX_WEBHOOK_URLS = 20;
const MAX_URL_LENGTH = 2048;
const MAX_DEMO_STEPS = 1000;
const MAX_MESSAGE_LENGTH = 500;
const MAX_TASK_SECONDS = 600; // the workers refuse longer demo tasks too
const EMAIL_RE = /^[^@\s<>"',;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/;

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}

function onlyKeys(body, allowed) {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length) {
    throw new ValidationError(
      `unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')}; allowed: ${allowed.join(', ') || 'none'}`,
    );
  }
}

function requireString(body, key, { max, optional = false } = {}) {
  const value = body[key];
  if (value === undefined && optional) return undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new ValidationError(`'${key}' must be a non-empty string, got ${describe(value)}`);
  }
  if (max !== undefined && value.length > max) {
    throw new ValidationError(`'${key}' must be at most ${max} characters`);
  }
  return value;
}

function requireNumber(body, key, { min, max, integer = false, optional = false }) {
  const value = body[key];
  if (value === undefined && optional) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new ValidationError(`'${key}' must be ${integer ? 'an integer' : 'a number'}, got ${describe(value)}`);
  }
  if (value < min || value > max) {
    throw new ValidationError(`'${key}' must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function isHttpUrl(value) {
  if (typeof value !== 'string' || value.length > MAX_URL_LENGTH) return false;
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

/**
 * The allowlist: route name → Celery task name and a function turning the
 * request body (and the signed-in user) into `{args, kwargs}` (throws ValidationError on bad input).
 */
export const TASKS = Object.freeze({
  'welcome-email': {
    task: 'workers.tasks.send_welcome_email',
    // Always for the signed-in user: the worker reads their document from MongoDB.
    build(body, { userId }) {
      onlyKeys(body, ['email']);
      const email = requireString(body, 'email', { max: 254, optional: true });
      if (email !== undefined && !EMAIL_RE.test(email)) {
        throw new ValidationError(`'email' is not a valid email address: ${JSON.stringify(email)}`);
      }
      return { args: [userId], kwargs: withoutUndefined({ email }) };
    },
  },
  'resize-image': {
    task: 'workers.tasks.resize_and_watermark',
    build(body) {
      onlyKeys(body, ['image_b64', 'width', 'watermark', 'steps_delay']);
      const imageB64 = requireString(body, 'image_b64', { max: MAX_IMAGE_B64_LENGTH, optional: true });
      const width = requireNumber(body, 'width', { min: 1, max: 8192, integer: true, optional: true });
      let watermark;
      if (body.watermark !== undefined) {
        if (typeof body.watermark !== 'string' || body.watermark.length > MAX_WATERMARK_LENGTH) {
          throw new ValidationError(`'watermark' must be a string of at most ${MAX_WATERMARK_LENGTH} characters`);
        }
        watermark = body.watermark;
      }
      const stepsDelay = requireNumber(body, 'steps_delay', { min: 0, max: MAX_STEPS_DELAY, optional: true });
      // Without image_b64 the worker draws a test image: the demo works with no upload.
      return {
        args: [],
        kwargs: withoutUndefined({ image_b64: imageB64, width, watermark, steps_delay: stepsDelay }),
      };
    },
  },
  predict: {
    task: 'workers.tasks.predict',
    build(body) {
      onlyKeys(body, ['features']);
      const { features } = body;
      if (!Array.isArray(features) || features.length !== 4) {
        throw new ValidationError(`'features' must be a list of 4 numbers (sepal length, sepal width, petal length, petal width), got ${describe(features)}`);
      }
      features.forEach((value, i) => {
        if (typeof value !== 'number' || !Number.isFinite(value)) {
          throw new ValidationError(`'features[${i}]' must be a finite number, got ${describe(value)}`);
        }
      });
      return { args: [features], kwargs: {} };
    },
  },
  webhooks: {
    task: 'workers.tasks.fanout_webhooks',
    build(body) {
      onlyKeys(body, ['urls', 'payload']);
      const { urls, payload } = body;
      if (!Array.isArray(urls) || urls.length === 0 || urls.length > MAX_WEBHOOK_URLS) {
        throw new ValidationError(`'urls' must be a list of 1 to ${MAX_WEBHOOK_URLS} http(s) URLs, got ${describe(urls)}`);
      }
      const bad = urls.filter((url) => !isHttpUrl(url));
      if (bad.length) {
        throw new ValidationError(`'urls' has entries that are not http(s) URLs: ${bad.map((u) => JSON.stringify(u)).join(', ')}`);
      }
      if (payload !== undefined && (payload === null || typeof payload !== 'object' || Array.isArray(payload))) {
        throw new ValidationError(`'payload' must be a JSON object, got ${describe(payload)}`);
      }
      return { args: [urls], kwargs: withoutUndefined({ payload }) };
    },
  },
  // Diagnostics for tests and demos.
  'demo-progress': {
    task: 'workers.tasks.demo_progress',
    build(body) {
      onlyKeys(body, ['steps', 'delay']);
      const steps = requireNumber(body, 'steps', { min: 0, max: MAX_DEMO_STEPS, integer: true });
      const delay = requireNumber(body, 'delay', { min: 0, max: MAX_STEPS_DELAY });
      if (steps * delay > MAX_TASK_SECONDS) {
        throw new ValidationError(`'steps' × 'delay' must be at most ${MAX_TASK_SECONDS} seconds, got ${steps * delay}`);
      }
      return { args: [steps, delay], kwargs: {} };
    },
  },
  fail: {
    task: 'workers.tasks.fail',
    build(body) {
      onlyKeys(body, ['message']);
      const message = requireString(body, 'message', { max: MAX_MESSAGE_LENGTH });
      return { args: [message], kwargs: {} };
    },
  },
});

/**
 * Validate a dispatch request for route name `name`, made by the signed-in `userId`.
 * Returns `{task, args, kwargs}`, or null when `name` is not in the allowlist;
 * throws ValidationError when the body is unusable.
 */
export function buildTaskCall(name, body, { userId } = {}) {
  if (!Object.hasOwn(TASKS, name)) return null;
  const payload = body === undefined ? {} : body;
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new ValidationError(`request body must be a JSON object, got ${describe(payload)}`);
  }
  const { task, build } = TASKS[name];
  return { task, ...build(payload, { userId }) };
}

const SUMMARY_VALUE_LENGTH = 40;
const SUMMARY_LENGTH = 200;

function summarizeValue(value) {
  if (typeof value === 'string') {
    // An uploaded image is megabytes of base64: its size says enough.
    return value.length > SUMMARY_VALUE_LENGTH ? `<${value.length} characters>` : JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(summarizeValue).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${k}: ${summarizeValue(v)}`).join(', ')}}`;
  }
  return JSON.stringify(value);
}

/** A short, human-readable summary of a call's arguments, for the task's record (long strings elided). */
export function summarizeArguments(args, kwargs) {
  const parts = [...args.map(summarizeValue), ...Object.entries(kwargs).map(([k, v]) => `${k}=${summarizeValue(v)}`)];
  const summary = parts.join(', ');
  return summary.length > SUMMARY_LENGTH ? `${summary.slice(0, SUMMARY_LENGTH - 1)}…` : summary;
}
