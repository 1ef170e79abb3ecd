// The public API, as the UI uses it. The bearer token lives in localStorage and goes only in
// the Authorization header, never in a URL.

const TOKEN_KEY = "chatd.token";
export const BASE = "/api/v1";

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An error answer: `status`, `code` and `details` from `{"error": {…}}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : {};
    super(error.message || `request failed with status ${status}`);
    this.status = status;
    this.code = error.code || "";
    this.details = error.details || null;
  }
}

const signedOutListeners = [];
/** Called when the server says the token is no longer good (401). */
export function onSignedOut(listener) {
  signedOutListeners.push(listener);
}

export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const current = token();
  if (current) headers.Authorization = `Bearer ${current}`;
  return headers;
}

/**
 * `api("POST", "/chats", {message: "hi"})` → the parsed JSON answer (null for 204).
 * `options.body` sends raw bytes instead of JSON (uploads); `options.raw` returns the Response.
 */
export async function api(method, path, json, options = {}) {
  const headers = authHeaders(options.headers);
  let body = options.body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(BASE + path, { method, headers, body, signal: options.signal });
  if (options.raw && response.ok) return response;
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      // not JSON (a proxy's page): the status says enough
    }
    const error = new ApiError(response.status, parsed);
    if (response.status === 401 && token()) signedOutListeners.forEach((listener) => listener(error));
    if (response.status === 429) {
      const retry = response.headers.get("Retry-After");
      if (retry) error.message += ` (retry after ${retry} s)`;
    }
    throw error;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, options) => api("GET", path, undefined, options);
export const post = (path, json, options) => api("POST", path, json, options);
export const patch = (path, json) => api("PATCH", path, json);
export const put = (path, json) => api("PUT", path, json);
export const del = (path) => api("DELETE", path);

/** A query string from an object, leaving out empty values; arrays repeat the key. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Every page of a list route (`items` + `next`), up to `max` items. */
export async function listAll(path, params = {}, max = 1000) {
  const items = [];
  let after;
  do {
    const page = await get(path + query({ ...params, after, limit: 100 }));
    items.push(...(page.items || []));
    after = page.next;
  } while (after && items.length < max);
  return items;
}

/** Uploads a File or Blob (`POST /files?name=`) → the file's metadata. */
export async function upload(file) {
  const answer = await api("POST", `/files${query({ name: file.name || "pasted" })}`, undefined, {
    body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" },
  });
  return answer.file || answer;
}

const objectUrls = new Map();
/** An object URL for an owned file's bytes (fetched with the token), cached per file id. */
export function fileUrl(fileId) {
  if (!objectUrls.has(fileId)) {
    objectUrls.set(
      fileId,
      api("GET", `/files/${encodeURIComponent(fileId)}`, undefined, { raw: true })
        .then((response) => response.blob())
        .then((blob) => URL.createObjectURL(blob)),
    );
  }
  return objectUrls.get(fileId);
}
