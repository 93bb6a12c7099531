// The console's API client: same-origin requests with the session cookie; changing requests
// carry the X-Beeldbrug-Console header the server requires (CSRF).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function parse(res) {
  const type = res.headers.get('content-type') || '';
  const body = type.includes('application/json') ? await res.json() : await res.text();
  if (!res.ok) {
    throw new ApiError(res.status, (body && body.error) || String(body) || res.statusText);
  }
  return body;
}

export async function get(path) {
  return parse(await fetch(`/admin/api${path}`, { credentials: 'same-origin' }));
}

export async function send(method, path, body, headers = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { 'X-Beeldbrug-Console': '1', ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  return parse(await fetch(`/admin/api${path}`, init));
}

export const login = (token) =>
  send('POST', '/session', undefined, { Authorization: `Bearer ${token.trim()}` });
export const logout = () => send('DELETE', '/session');

// An image of the API as an object URL (the cookie goes with it; an <img src> would too, but
// this way a failure is seen and the URL is released with the component).
export async function imageUrl(path) {
  const res = await fetch(`/admin/api${path}`, { credentials: 'same-origin' });
  if (!res.ok) throw new ApiError(res.status, await res.text());
  return URL.createObjectURL(await res.blob());
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function unixTime(s) {
  if (!s) return '';
  return new Date(s * 1000).toISOString().replace('.000Z', 'Z');
}
