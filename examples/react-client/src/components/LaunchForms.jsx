import { useId, useState } from 'react';

const MAX_IMAGE_BYTES = 10 * 1024 * 1024;

const IRIS_SAMPLES = {
  setosa: [5.1, 3.5, 1.4, 0.2],
  versicolor: [6.4, 3.2, 4.5, 1.5],
  virginica: [6.3, 3.3, 6.0, 2.5],
};
const IRIS_FEATURES = ['Sepal length', 'Sepal width', 'Petal length', 'Petal width'];

/**
 * A card with one form that starts one kind of task. `onStart(kind, body)`
 * dispatches and resolves once the task is queued; its error is shown here.
 */
function LaunchCard({ kind, title, description, buttonLabel, onStart, buildBody, children }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  async function submit(event) {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const body = await buildBody();
      await onStart(kind, body);
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="launch-card" onSubmit={submit} data-testid={`launch-${kind}`} noValidate>
      <div className="launch-card__text">
        <h3>{title}</h3>
        <p>{description}</p>
      </div>
      {children}
      <div className="launch-card__actions">
        <button type="submit" className="button" disabled={busy}>
          {busy ? 'Starting…' : buttonLabel}
        </button>
        {error && <p className="launch-card__error" role="alert">{error}</p>}
      </div>
    </form>
  );
}

function Field({ label, hint, children }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children(id)}
      {hint && <small className="field__hint">{hint}</small>}
    </div>
  );
}

export function WelcomeEmailForm({ onStart }) {
  const [email, setEmail] = useState('');
  return (
    <LaunchCard
      kind="welcome-email"
      title="Welcome email"
      description="Send your welcome email again: the worker reads your account from MongoDB."
      buttonLabel="Send welcome email"
      onStart={onStart}
      buildBody={() => (email.trim() ? { email: email.trim() } : {})}
    >
      <Field label="Email (optional)">
        {(id) => <input id={id} type="email" placeholder="ada@example.com" value={email} onChange={(e) => setEmail(e.target.value)} />}
      </Field>
    </LaunchCard>
  );
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}

export function ResizeImageForm({ onStart }) {
  const [file, setFile] = useState(null);
  const [width, setWidth] = useState('640');
  const [watermark, setWatermark] = useState('celery-pushserver');
  const [stepsDelay, setStepsDelay] = useState('0.5');
  return (
    <LaunchCard
      kind="resize-image"
      title="Resize & watermark"
      description="Scale an image and stamp a watermark on it. No file? The worker draws a test image."
      buttonLabel="Resize image"
      onStart={onStart}
      buildBody={async () => {
        const body = { width: Number(width), watermark, steps_delay: Number(stepsDelay) };
        if (!Number.isInteger(body.width) || body.width < 1 || body.width > 8192) throw new Error('Width must be a whole number from 1 to 8192.');
        if (!Number.isFinite(body.steps_delay) || body.steps_delay < 0 || body.steps_delay > 10) throw new Error('Step pause must be between 0 and 10 seconds.');
        if (file) {
          if (file.size > MAX_IMAGE_BYTES) throw new Error('Images up to 10 MB, please.');
          body.image_b64 = await readAsDataUrl(file);
        }
        return body;
      }}
    >
      <Field label="Image" hint={file ? `${file.name} · ${(file.size / 1024).toFixed(0)} KB` : 'PNG, JPEG, WebP or GIF, up to 10 MB'}>
        {(id) => <input id={id} type="file" accept="image/*" onChange={(e) => setFile(e.target.files?.[0] ?? null)} data-testid="image-input" />}
      </Field>
      <div className="field-row">
        <Field label="Width (px)">{(id) => <input id={id} type="number" min="1" max="8192" value={width} onChange={(e) => setWidth(e.target.value)} />}</Field>
        <Field label="Watermark">{(id) => <input id={id} maxLength={100} value={watermark} onChange={(e) => setWatermark(e.target.value)} />}</Field>
        <Field label="Pause per step (s)" hint="Demo pacing">
          {(id) => <input id={id} type="number" min="0" max="10" step="0.1" value={stepsDelay} onChange={(e) => setStepsDelay(e.target.value)} data-testid="steps-delay" />}
        </Field>
      </div>
    </LaunchCard>
  );
}

export function PredictForm({ onStart }) {
  const [features, setFeatures] = useState(IRIS_SAMPLES.setosa.map(String));
  return (
    <LaunchCard
      kind="predict"
      title="ML inference"
      description="Classify an iris flower from its measurements with a logistic regression model."
      buttonLabel="Classify"
      onStart={onStart}
      buildBody={() => {
        const values = features.map(Number);
        if (features.some((f) => f.trim() === '') || values.some((v) => !Number.isFinite(v))) throw new Error('All four measurements must be numbers.');
        return { features: values };
      }}
    >
      <div className="field-row field-row--four">
        {IRIS_FEATURES.map((label, i) => (
          <Field key={label} label={`${label} (cm)`}>
            {(id) => (
              <input id={id} type="number" step="0.1" min="0" value={features[i]}
                onChange={(e) => setFeatures(features.map((f, j) => (j === i ? e.target.value : f)))} />
            )}
          </Field>
        ))}
      </div>
      <div className="chips" aria-label="Sample flowers">
        {Object.entries(IRIS_SAMPLES).map(([name, sample]) => (
          <button key={name} type="button" className="chip" onClick={() => setFeatures(sample.map(String))}>{name}</button>
        ))}
      </div>
    </LaunchCard>
  );
}

export function WebhooksForm({ onStart }) {
  const origin = typeof window !== 'undefined' ? window.location.origin : 'http://127.0.0.1:3000';
  const [urls, setUrls] = useState(`${origin}/api/webhook-sink/orders\n${origin}/api/webhook-sink/analytics`);
  const [payload, setPayload] = useState('{"event": "order.created", "order_id": 42}');
  return (
    <LaunchCard
      kind="webhooks"
      title="Webhook fan-out"
      description="POST one JSON payload to every URL, one Celery task per delivery."
      buttonLabel="Fan out webhooks"
      onStart={onStart}
      buildBody={() => {
        const list = urls.split('\n').map((u) => u.trim()).filter(Boolean);
        if (list.length === 0) throw new Error('Enter at least one URL.');
        let body;
        try {
          body = payload.trim() ? JSON.parse(payload) : {};
        } catch {
          throw new Error('The payload must be valid JSON.');
        }
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('The payload must be a JSON object.');
        return { urls: list, payload: body };
      }}
    >
      <Field label="URLs (one per line)">{(id) => <textarea id={id} rows={3} value={urls} onChange={(e) => setUrls(e.target.value)} spellCheck={false} />}</Field>
      <Field label="Payload (JSON)">{(id) => <textarea id={id} rows={2} value={payload} onChange={(e) => setPayload(e.target.value)} spellCheck={false} />}</Field>
    </LaunchCard>
  );
}

export function DiagnosticsForm({ onStart }) {
  const [message, setMessage] = useState('Disk quota exceeded');
  return (
    <LaunchCard
      kind="fail"
      title="Failure drill"
      description="Run a task that raises, to see how errors reach the page."
      buttonLabel="Run failing task"
      onStart={onStart}
      buildBody={() => ({ message: message.trim() || 'Simulated failure' })}
    >
      <Field label="Error message">{(id) => <input id={id} maxLength={500} value={message} onChange={(e) => setMessage(e.target.value)} />}</Field>
    </LaunchCard>
  );
}
