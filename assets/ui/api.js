// The API client of the page: same origin, JSON, the token as a bearer header.
// The token lives in session storage (this tab only) and never in a URL the
// page navigates to; the WebSocket, which cannot carry a header from a
// browser, gets it as `access_token`, which the server reads on that route only.

const TOKEN_KEY = "icarus.token";

/** An answer that was not a success: its status and the server's `detail`. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail || "";
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Called on every 401, so the page can ask for a token again. */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  const t = token();
  if (t) all.Authorization = `Bearer ${t}`;
  return all;
}

async function answer(response) {
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (response.ok) return { body, headers: response.headers };
  const detail = body && typeof body === "object" ? String(body.detail ?? "") : String(body || "").slice(0, 500);
  const error = new ApiError(response.status, detail);
  if (response.status === 401) onUnauthorized(error);
  throw error;
}

async function request(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (cause) {
    throw new ApiError(0, `Icarus cannot be reached (${cause.message}); is it running?`);
  }
  return answer(response);
}

export async function get(path) {
  return (await request("GET", path)).body;
}

/** A GET whose headers matter too (the diff's snapshot). */
export function getWithHeaders(path) {
  return request("GET", path);
}

export async function post(path, body = {}) {
  return (await request("POST", path, body)).body;
}

/** The WebSocket URL of a job's stream, resuming after `since` when given. */
export function streamUrl(jobId, since) {
  const url = new URL(`/jobs/${encodeURIComponent(jobId)}/stream`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (since !== null && since !== undefined) url.searchParams.set("since", String(since));
  const t = token();
  if (t) url.searchParams.set("access_token", t);
  return url.toString();
}

/** Role order, as the server's: each may do what the ones before it may. */
const ROLES = ["viewer", "submitter", "approver", "admin"];
export function atLeast(me, role) {
  return Boolean(me) && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}
