// The page's calls to its JSON API (service/web/api.py). Every error is an ApiError carrying
// the HTTP status, the gRPC code and the server's message, shown as text.

let token = null;

export function setToken(value) {
  token = value || null;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(withBody) {
  const out = {};
  if (withBody) out["Content-Type"] = "application/json";
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function failure(response) {
  let error = { status: response.status, code: String(response.status), message: response.statusText };
  try {
    error = (await response.json()).error || error;
  } catch (_) {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, error.code, error.message);
}

export async function call(method, path, body = undefined) {
  const withBody = body !== undefined;
  const response = await fetch(path, {
    method, headers: headers(withBody), body: withBody ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A POST whose answer is newline-delimited JSON: onLine(object) for each line as it arrives.
// `signal` (an AbortController's) ends it: the connection closes and the server cancels the
// call. A line {"error": ...} (a failure after the stream began) is thrown as an ApiError.
export async function stream(path, body, onLine, signal) {
  const response = await fetch(path, {
    method: "POST", headers: headers(true), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      if (!line.trim()) continue;
      const item = JSON.parse(line);
      if (item.error) throw new ApiError(item.error.status, item.error.code, item.error.message);
      onLine(item);
    }
  }
}
