// Configuration: the effective configuration (embedded defaults, file, environment), with
// secrets masked by the server.
import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';

export function Configuration() {
  const [config, setConfig] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    get('/config').then((r) => setConfig(r.config), (e) => setError(e.message));
  }, []);
  return (
    <>
      <h1>Configuration</h1>
      <p class="muted">Effective configuration; passwords and secrets are shown as ***.</p>
      {error && <p class="error">{error}</p>}
      {config && (
        <pre class="config" data-testid="config">
          {JSON.stringify(config, null, 2)}
        </pre>
      )}
    </>
  );
}
