import { useId, useRef, useState } from 'react';

const USERNAME_RE = /^[A-Za-z0-9_.-]{3,64}$/;
const MIN_PASSWORD = 8;

/**
 * Sign in or create an account with the Express app's session API.
 * `signIn` and `register` resolve to the user; `onSignedIn(user)` follows.
 */
export function SignInForm({ signIn, register, onSignedIn, notice }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const userId = useId();
  const passwordId = useId();
  const chosen = useRef('login'); // which submit button was used (Enter means sign in)

  async function submit(event) {
    event.preventDefault();
    const action = chosen.current === 'register' ? register : signIn;
    chosen.current = 'login';
    setError(null);
    if (!USERNAME_RE.test(username)) {
      setError("The username must be 3 to 64 letters, digits, '_', '.' or '-'.");
      return;
    }
    if (password.length < MIN_PASSWORD) {
      setError(`The password must have at least ${MIN_PASSWORD} characters.`);
      return;
    }
    setBusy(true);
    try {
      onSignedIn(await action(username, password));
    } catch (err) {
      setError(err.code === 'conflict' ? 'That username is taken: sign in instead, or pick another.' : err.message);
      setBusy(false);
    }
  }

  return (
    <form className="panel sign-in" onSubmit={submit} aria-labelledby="sign-in-heading" noValidate data-testid="sign-in">
      <h2 id="sign-in-heading">Sign in</h2>
      <p className="sign-in__intro">Tasks you start are yours: only you get the tokens that let the page follow them.</p>
      {notice && <p className="sign-in__notice" role="status">{notice}</p>}
      <div className="field">
        <label htmlFor={userId}>Username</label>
        <input id={userId} name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} />
      </div>
      <div className="field">
        <label htmlFor={passwordId}>Password</label>
        <input id={passwordId} name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
      </div>
      <div className="sign-in__actions">
        <button type="submit" className="button" name="action" value="login" disabled={busy} onClick={() => { chosen.current = 'login'; }}>Sign in</button>
        <button type="submit" className="button button--ghost" name="action" value="register" disabled={busy} onClick={() => { chosen.current = 'register'; }}>Create account</button>
      </div>
      {error && <p className="launch-card__error" role="alert">{error}</p>}
    </form>
  );
}
