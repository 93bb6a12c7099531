// The operator's console of beeldbrug: one page per concern, chosen by the URL's hash
// (#/studies, #/transfers, #/queues, #/audit, #/peers, #/config).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, login, logout } from './api.js';
import { Studies } from './pages/studies.jsx';
import { Transfers } from './pages/transfers.jsx';
import { Queues } from './pages/queues.jsx';
import { Audit } from './pages/audit.jsx';
import { Peers } from './pages/peers.jsx';
import { Configuration } from './pages/config.jsx';
import './app.css';

const PAGES = [
  ['studies', 'Studies', Studies],
  ['transfers', 'Transfers', Transfers],
  ['queues', 'Queues', Queues],
  ['audit', 'Audit', Audit],
  ['peers', 'Peers', Peers],
  ['config', 'Configuration', Configuration],
];

function currentPage() {
  const name = (location.hash || '').replace(/^#\/?/, '').split('?')[0];
  return PAGES.some(([n]) => n === name) ? name : 'studies';
}

function Login({ onDone, reason }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await login(token);
      onDone();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="login">
      <h1>beeldbrug console</h1>
      <p>
        Sign in with a token of your organisation with an admin role (or use a client certificate
        listed in <code>trust.admin_certificates</code>).
      </p>
      {reason && <p class="muted" data-testid="login-reason">{reason}</p>}
      <form onSubmit={submit} data-testid="login-form">
        <label>
          Admin token (JWT)
          <textarea
            name="token"
            rows="4"
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
            autocomplete="off"
            spellcheck={false}
          />
        </label>
        <button type="submit" disabled={busy || !token.trim()}>
          Sign in
        </button>
      </form>
      {error && (
        <p class="error" data-testid="login-error">
          {error}
        </p>
      )}
    </main>
  );
}

function App() {
  const [me, setMe] = useState(null);
  const [page, setPage] = useState(currentPage());
  const check = () =>
    get('/whoami').then(setMe, (e) => setMe({ authenticated: false, reason: e.message }));
  useEffect(() => {
    check();
    const onHash = () => setPage(currentPage());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  if (me === null) return <p class="muted">Loading…</p>;
  if (!me.authenticated) return <Login onDone={check} reason={me.reason} />;
  const Page = PAGES.find(([n]) => n === page)[2];
  return (
    <div class="shell">
      <header>
        <span class="brand">beeldbrug</span>
        <span class="muted">
          {me.gateway.ae_title} · v{me.gateway.version}
          {me.gateway.gateway_mode ? ' · gateway mode' : ''}
        </span>
        <nav>
          {PAGES.map(([name, title]) => (
            <a href={`#/${name}`} class={name === page ? 'active' : ''} data-testid={`nav-${name}`}>
              {title}
            </a>
          ))}
        </nav>
        <span class="who" data-testid="who">
          {me.subject}
          {me.role ? ` (${me.role})` : ''}
        </span>
        <button class="link" onClick={() => logout().finally(check)} data-testid="logout">
          Sign out
        </button>
      </header>
      <main data-testid={`page-${page}`}>
        <Page />
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app'));
