// The dashboard's entry: who is calling (asking for a token when the server
// wants one), then a small hash router over the four pages. Each page
// returns a function that stops what it started (streams, timers) when the
// viewer leaves it.

import { ApiError, atLeast, get, setToken, token, whenUnauthorized } from "./api.js";
import { h, replace, page } from "./dom.js";
import { jobsPage } from "./jobs.js";
import { newJobPage } from "./new-job.js";
import { jobPage } from "./job.js";
import { reviewPage } from "./review.js";

const context = { me: null };
let leave = () => {};

/** Shows an error above the page; 401 and 403 say what to do about them. */
export function showError(error) {
  const banner = document.getElementById("banner");
  let text = error instanceof ApiError ? error.detail || error.message : String(error);
  if (error instanceof ApiError && error.status === 403) text = `Not allowed (403): ${text}`;
  if (error instanceof ApiError && error.status === 401) text = `Sign-in needed (401): ${text}`;
  replace(banner, h("span", {}, text), h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: hideError }, "×"));
  banner.hidden = false;
}

export function hideError() {
  document.getElementById("banner").hidden = true;
}

function showWho() {
  const who = document.getElementById("who");
  const me = context.me;
  if (!me) return replace(who);
  const parts = [h("span", { class: "who-name", title: "Signed in as" }, me.name), " ", h("span", { class: `role role-${me.role}` }, me.role)];
  if (me.authentication) {
    parts.push(" ", h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"));
  } else {
    parts.push(" ", h("span", { class: "muted small" }, "(authentication off)"));
  }
  replace(who, parts);
  document.getElementById("nav-new").hidden = !atLeast(me, "submitter");
}

function signOut() {
  setToken("");
  context.me = null;
  showWho();
  askForToken("Signed out.");
}

/** The login dialog; resolves once a token the server takes is given. */
function askForToken(message = "") {
  const dialog = document.getElementById("login");
  const error = document.getElementById("login-error");
  error.textContent = message;
  if (!dialog.open) dialog.showModal();
  document.getElementById("login-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("login-token");
  const error = document.getElementById("login-error");
  setToken(input.value.trim());
  try {
    context.me = await get("/auth/me");
  } catch (failure) {
    setToken("");
    input.value = "";
    input.focus();
    error.textContent = failure.status === 401 ? "This token is not valid here." : failure.message;
    return;
  }
  input.value = "";
  document.getElementById("login").close();
  showWho();
  route();
}

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  return { parts, query: new URLSearchParams(query) };
}

function route() {
  leave();
  leave = () => {};
  hideError();
  if (!context.me) return;
  const { parts, query } = parseRoute();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = link.dataset.nav === (parts[0] === "new" ? "new" : "jobs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = { ...context, query, showError };
  let stop;
  if (parts[0] === "new") stop = newJobPage(view);
  else if (parts[0] === "jobs" && parts[1] && parts[2] === "review") stop = reviewPage(view, parts[1]);
  else if (parts[0] === "jobs" && parts[1]) stop = jobPage(view, parts[1]);
  else stop = jobsPage(view);
  leave = typeof stop === "function" ? stop : () => {};
}

async function start() {
  document.getElementById("login-form").addEventListener("submit", signIn);
  document.getElementById("login").addEventListener("cancel", (event) => event.preventDefault());
  whenUnauthorized(() => {
    context.me = null;
    setToken("");
    showWho();
    leave();
    askForToken("Your token was refused (401); give it again.");
  });
  window.addEventListener("hashchange", route);
  try {
    context.me = await get("/auth/me");
  } catch (error) {
    if (error.status === 401) {
      page("Sign in", h("p", { class: "muted" }, "This server asks for an API token."));
      askForToken(token() ? "Your token was refused (401)." : "");
      return;
    }
    page("Unavailable", h("p", {}, error.message));
    return;
  }
  showWho();
  route();
}

start();
