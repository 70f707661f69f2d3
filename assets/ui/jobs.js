// The jobs list: newest first, filtered by phase and project on the server,
// by submitter and task text on the page, read again every few seconds
// while the tab is visible (there is no stream of all jobs). Pages of 50:
// the newest ones, up to the API's 1,000, are read again; older pages are
// fetched once each by the API's cursor (`after`), so a server with 10,000
// jobs sends only what is asked for.

import { atLeast, get } from "./api.js";
import { h, page, replace } from "./dom.js";
import { PHASES, ageElement, badge, phaseLabel, shortId } from "./format.js";

const PAGE = 50;
const MAX = 1000;
const REFRESH_MS = 3000;

/** Pending reasons in words. */
const WAITING = {
  ConcurrencyLimit: "waiting for a free slot (concurrency limit)",
  HostBusy: "waiting: the host is busy (sentinel)",
  QueuedBehindOlderJobs: "queued behind older jobs",
  Created: "just submitted",
};

export function jobsPage(view) {
  const filters = {
    status: view.query.get("status") || "",
    project: view.query.get("project") || "",
    submitter: view.query.get("submitter") || "",
    q: view.query.get("q") || "",
  };
  let limit = PAGE;
  let timer = null;
  let stopped = false;
  let jobs = [];
  /** Pages beyond the newest `MAX`, by cursor: fetched once, not read again. */
  let older = [];
  let olderEnded = false;
  let lastBody = "";

  const phase = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "All phases"),
    PHASES.map((p) => h("option", { value: p }, phaseLabel(p))));
  phase.value = filters.status;
  const project = h("input", { id: "filter-project", name: "project", value: filters.project, placeholder: "any", autocomplete: "off", spellcheck: "false" });
  const submitter = h("input", { id: "filter-submitter", name: "submitter", value: filters.submitter, placeholder: "anyone", autocomplete: "off", spellcheck: "false" });
  const search = h("input", { id: "filter-q", name: "q", type: "search", value: filters.q, placeholder: "words in the task", autocomplete: "off" });
  const rows = h("tbody", { id: "job-rows" });
  const status = h("p", { class: "muted small", id: "list-status", "aria-live": "polite" });
  const more = h("button", { type: "button", id: "more", hidden: true, onclick: showOlder }, "Show older jobs");

  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    field("Phase", phase), field("Project", project), field("Submitted by", submitter), field("Search", search));

  page("Jobs",
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"),
      atLeast(view.me, "submitter") ? h("a", { class: "button primary", href: "#/new" }, "New job") : null),
    form,
    h("div", { class: "table-wrap" },
      h("table", { class: "jobs" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Phase"),
          h("th", { scope: "col" }, "Reason"), h("th", { scope: "col" }, "Project"),
          h("th", { scope: "col" }, "Submitted by"), h("th", { scope: "col" }, "Age"))),
        rows)),
    status, more);

  function field(label, input) {
    return h("label", { class: "filter" }, h("span", {}, label), input);
  }

  /** Keeps the filters in the address (never a token), so a reload keeps them. */
  function remember() {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
    const hash = `#/jobs${query.toString() ? `?${query}` : ""}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  let typing = null;
  function changed() {
    filters.status = phase.value;
    filters.project = project.value.trim();
    filters.submitter = submitter.value.trim();
    filters.q = search.value.trim();
    remember();
    clearTimeout(typing);
    typing = setTimeout(() => { limit = PAGE; older = []; olderEnded = false; lastBody = ""; refresh(); }, 250);
  }
  for (const input of [phase, project, submitter, search]) input.addEventListener("input", changed);

  function listQuery(size) {
    const query = new URLSearchParams({ limit: String(size) });
    if (filters.status) query.set("status", filters.status);
    if (filters.project) query.set("project_id", filters.project);
    return query;
  }

  function showOlder() {
    if (limit < MAX) {
      limit = Math.min(MAX, limit + PAGE);
      refresh();
    } else {
      loadOlder();
    }
  }

  /** The page after the oldest row shown, by the API's cursor. */
  async function loadOlder() {
    const last = (older.length ? older : jobs).at(-1);
    if (!last) return;
    const query = listQuery(PAGE);
    query.set("after", last.job_id);
    try {
      const page = await get(`/jobs?${query}`);
      older = older.concat(page);
      olderEnded = page.length < PAGE;
      render();
    } catch (error) {
      if (!stopped) status.textContent = `Could not read older jobs: ${error.message}`;
    }
  }

  async function refresh() {
    clearTimeout(timer);
    const query = listQuery(limit);
    try {
      jobs = await get(`/jobs?${query}`);
      const body = JSON.stringify(jobs);
      if (body !== lastBody) {
        lastBody = body;
        render();
      } else {
        for (const time of rows.querySelectorAll("time")) time.replaceWith(ageElement(time.getAttribute("datetime")));
      }
    } catch (error) {
      if (stopped) return;
      status.textContent = error.status === 422 ? error.detail : `Could not read the jobs: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
  }

  function render() {
    const words = filters.q.toLowerCase().split(/\s+/).filter(Boolean);
    const newest = new Set(jobs.map((job) => job.job_id));
    const listed = jobs.concat(older.filter((job) => !newest.has(job.job_id)));
    const shown = listed.filter((job) =>
      (!filters.submitter || (job.submitted_by || "").toLowerCase().includes(filters.submitter.toLowerCase())) &&
      words.every((word) => job.task.toLowerCase().includes(word)));
    replace(rows, shown.map(row));
    if (shown.length === 0) {
      rows.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, listed.length ? "No job on this page matches." : "No jobs yet.")));
    }
    const full = jobs.length >= limit;
    status.textContent = `${shown.length} shown of the newest ${listed.length} job${listed.length === 1 ? "" : "s"}${filters.status || filters.project ? " matching the filters" : ""}.`;
    more.hidden = !full || (limit >= MAX && olderEnded);
  }

  function row(job) {
    const waiting = job.status === "pending" ? (job.waiting || WAITING[job.reason] || job.reason) : null;
    return h("tr", { "data-job": job.job_id, "data-phase": job.status },
      h("td", { class: "task", "data-label": "Task" },
        h("a", { href: `#/jobs/${job.job_id}`, class: "task-link" }, firstLine(job.task)),
        h("span", { class: "muted mono small" }, shortId(job.job_id))),
      h("td", { "data-label": "Phase" }, badge(job.status)),
      h("td", { "data-label": "Reason" }, waiting ? h("span", { class: "waiting" }, waiting) : job.reason || ""),
      h("td", { "data-label": "Project" }, job.project_id),
      h("td", { "data-label": "Submitted by" }, job.submitted_by || ""),
      h("td", { "data-label": "Age" }, ageElement(job.created_at)));
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(typing);
  };
}

/** The task's first line, shortened: the job page shows all of it. */
export function firstLine(task) {
  const line = String(task || "").split("\n", 1)[0];
  return line.length > 140 ? `${line.slice(0, 140)}…` : line;
}
