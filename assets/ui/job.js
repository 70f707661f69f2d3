// A job's page: what it is, where it stands and why (the phase timeline
// with times and durations), what its agents use, their live output, the
// audit report, and what may be done with it (review, cancel, publish again).
// Status changes arrive on the job's stream; the rest is read again then.

import { atLeast, get, post } from "./api.js";
import { h, page, replace } from "./dom.js";
import { TERMINAL, ageElement, badge, bytes, duration, shortId, when } from "./format.js";
import { Terminal, follow } from "./terminal.js";
import { auditReport } from "./audit.js";
import { firstLine } from "./jobs.js";

const TELEMETRY_MS = 3000;
/** Phases in which the builder's change (the diff) exists. */
const REVIEWABLE = new Set(["checking", "awaiting_approval", "approved", "completed", "rejected", "expired"]);

export function jobPage(view, id) {
  const terminal = new Terminal();
  const head = h("div", { class: "page-head job-head" });
  const alerts = h("div", { class: "alerts", id: "job-alerts" });
  const actions = h("div", { class: "actions", id: "job-actions" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const details = h("dl", { class: "terms", id: "details" });
  const telemetry = h("dl", { class: "terms", id: "telemetry" });
  const audit = h("div", { id: "audit" });
  let status = null;
  let stopped = false;
  let timer = null;

  page(`Job ${shortId(id)}`,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, shortId(id))),
    head, actions, alerts,
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), timeline),
      h("section", { class: "card", "aria-labelledby": "details-title" }, h("h2", { id: "details-title" }, "Details"), details),
      h("section", { class: "card", "aria-labelledby": "telemetry-title" }, h("h2", { id: "telemetry-title" }, "Telemetry"), telemetry)),
    terminal.element,
    audit);

  async function load() {
    try {
      status = await get(`/jobs/${id}/status`);
    } catch (error) {
      replace(head, h("h1", {}, "Job not shown"));
      view.showError(error);
      return false;
    }
    render();
    await Promise.all([loadEvents(), loadTelemetry(), loadAudit()]);
    return true;
  }

  function render() {
    document.title = `${firstLine(status.task).slice(0, 60)} · Icarus`;
    replace(head,
      h("div", {},
        h("h1", { class: "task-title" }, firstLine(status.task)),
        h("p", { class: "muted" },
          badge(status.status), " ",
          h("span", { class: "mono" }, status.job_id), " · ",
          `project ${status.project_id}`, " · ",
          `by ${status.submitted_by || "unknown"}`, " · ",
          ageElement(status.created_at))),
      status.task.includes("\n") || status.task.length > 140
        ? h("details", { class: "task-full" }, h("summary", {}, "Whole task"), h("pre", { class: "wrap" }, status.task))
        : null);
    renderActions();
    renderAlerts();
    renderDetails();
  }

  function renderActions() {
    const me = view.me;
    const phase = status.status;
    const buttons = [];
    if (REVIEWABLE.has(phase) || (phase === "failed" && status.snapshot)) {
      const deciding = phase === "awaiting_approval" && !status.approval;
      buttons.push(h("a", { class: `button ${deciding ? "primary" : ""}`, href: `#/jobs/${id}/review`, id: "review-link" },
        deciding ? "Review and decide" : "View the diff"));
    }
    const own = status.submitted_by === me.name;
    if (!TERMINAL.has(phase) && !status.cancel_requested && (atLeast(me, "admin") || (own && atLeast(me, "submitter")))) {
      buttons.push(confirmButton("Cancel job", "Really cancel?", "cancel", async () => post(`/jobs/${id}/cancel`)));
    }
    if (phase === "failed" && status.reason === "PublishFailed" && atLeast(me, "approver")) {
      buttons.push(h("button", { type: "button", class: "primary", id: "publish", onclick: () => act(() => post(`/jobs/${id}/publish`)) }, "Publish again"));
    }
    replace(actions, buttons);
  }

  /** A button that asks once more before it acts (armed for 5 s, across redraws). */
  const armedUntil = {};
  function confirmButton(label, confirm, idName, action) {
    const armed = () => (armedUntil[idName] || 0) > Date.now();
    const button = h("button", { type: "button", class: "danger", id: idName }, armed() ? confirm : label);
    button.addEventListener("click", () => {
      if (!armed()) {
        armedUntil[idName] = Date.now() + 5000;
        button.textContent = confirm;
        setTimeout(() => { if (!armed()) button.textContent = label; }, 5100);
        return;
      }
      armedUntil[idName] = 0;
      act(action);
    });
    return button;
  }

  async function act(action) {
    try {
      await action();
      status = await get(`/jobs/${id}/status`);
    } catch (error) {
      view.showError(error);
      return;
    }
    render();
    loadEvents();
    poll();
    // A publish retry takes a finished job up again (perhaps a moment
    // from now): follow its stream again from where it ended.
    if (streamEnded) listen();
  }

  function renderAlerts() {
    const items = [];
    const phase = status.status;
    if (phase === "failed") {
      items.push(h("div", { class: "callout error", id: "failure", role: "status" },
        h("strong", {}, `Failed: ${status.reason}`),
        status.error_message ? h("pre", { class: "wrap" }, status.error_message) : null,
        status.reason === "PublishFailed" ? h("p", {}, "The approved commit is kept; an approver may publish it again.") : null));
    }
    if (phase === "expired") {
      items.push(h("div", { class: "callout warn", id: "expired", role: "status" },
        h("strong", {}, `Expired: ${status.reason}`),
        status.error_message ? h("p", { class: "wrap" }, status.error_message) : null));
    }
    if (phase === "pending") {
      const queue = status.queue;
      items.push(h("div", { class: "callout", id: "waiting" }, h("strong", {}, `Waiting: ${queue ? queue.reason : status.reason}`),
        queue ? h("p", {}, `Place ${queue.position} in the queue: ${queue.detail}`,
          queue.estimated_start_at ? ["; expected to start ", h("time", { datetime: queue.estimated_start_at }, when(queue.estimated_start_at))] : "") : null,
        status.waiting ? h("p", {}, status.waiting) : null));
    } else if (status.waiting) {
      items.push(h("div", { class: "callout", id: "waiting" }, h("strong", {}, "The agent has not started yet"), h("p", {}, status.waiting)));
    }
    if (status.approval) {
      const a = status.approval;
      items.push(h("div", { class: `callout ${a.approved ? "ok" : "warn"}`, id: "decision" },
        h("strong", {}, `${a.approved ? "Approved" : "Rejected"} by ${a.decided_by || "unknown"}`), " ",
        h("time", { datetime: a.decided_at }, when(a.decided_at)),
        a.comment ? h("pre", { class: "wrap" }, a.comment) : null));
    }
    if (phase === "awaiting_approval" && !status.approval && (status.required_approvals || 1) > 1) {
      const by = status.approved_by || [];
      items.push(h("div", { class: "callout", id: "approvals" },
        h("strong", {}, `Approvals: ${by.length} of ${status.required_approvals}`),
        by.length ? h("p", {}, `Approved by ${by.join(", ")}`) : null));
    }
    if (status.egress && status.egress.requests.length) items.push(egressRequests());
    if (status.branch || status.commit || status.pull_request_url) items.push(published(status));
    if (phase === "cancelled" || status.cancel_requested) {
      items.push(h("div", { class: "callout warn" }, phase === "cancelled" ? "Cancelled." : "Cancel requested; its agents are being stopped."));
    }
    replace(alerts, items);
  }

  /** Destinations the agents were refused as unlisted: an approver may allow them. */
  function egressRequests() {
    const canAllow = atLeast(view.me, "approver");
    return h("div", { class: "callout warn", id: "egress-requests" },
      h("strong", {}, "The agents asked to reach destinations nobody has allowed"),
      h("ul", { class: "plain" }, status.egress.requests.map((destination) => h("li", {},
        h("span", { class: "mono" }, destination), " ",
        canAllow ? h("button", { type: "button", class: "small", "data-destination": destination,
          onclick: () => act(() => post(`/jobs/${id}/egress/allow`, { domain: destination })) }, "Allow for this job") : null))),
      canAllow ? null : h("p", { class: "muted small" }, "Allowing a destination needs the approver role."));
  }

  function renderDetails() {
    const s = status;
    const rows = [
      ["Phase", [badge(s.status), " ", s.reason]],
      ["Attempt", String(s.attempt)],
      ["Source", s.source ? `${s.source.repository}${s.source.ref ? ` @ ${s.source.ref}` : ""}` : "none (an empty workspace)"],
      ["Base commit", s.base_commit ? h("span", { class: "mono" }, s.base_commit.slice(0, 12)) : null],
      ["Snapshot", s.snapshot ? h("span", { class: "mono", id: "snapshot" }, s.snapshot.slice(0, 12)) : null],
      ["Builder image", s.builder_image || "configured default"],
      ["Checker image", s.checker_image || "configured default"],
      ["Builder exit code", s.builder_exit_code],
      ["Checker exit code", s.checker_exit_code],
      ["Finished", s.completed_at ? when(s.completed_at) : null],
      ["Priority", s.priority !== undefined && s.priority !== 0 ? String(s.priority) : null],
      ["Egress", s.egress ? `${s.egress.allowed} allowed, ${s.egress.refused} refused; ${bytes(s.egress.bytes_sent)} out, ${bytes(s.egress.bytes_received)} in` : null],
    ];
    replace(details, rows.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  async function loadEvents() {
    let events;
    try {
      events = await get(`/jobs/${id}/events`);
    } catch {
      return;
    }
    const ended = TERMINAL.has(status.status);
    replace(timeline, events.map((event, index) => {
      const next = events[index + 1];
      const until = next ? new Date(next.created_at) : ended ? null : new Date();
      const took = until ? duration(until - new Date(event.created_at)) : "";
      return h("li", { class: `step phase-${event.to}` },
        h("div", { class: "step-head" }, badge(event.to), " ",
          h("time", { datetime: event.created_at, title: when(event.created_at) }, when(event.created_at))),
        h("div", { class: "muted small" }, event.reason, took ? ` · ${next ? "took" : "so far"} ${took}` : ""),
        event.message ? h("div", { class: "small wrap" }, event.message) : null);
    }));
  }

  async function loadTelemetry() {
    let t;
    try {
      t = await get(`/jobs/${id}/telemetry`);
    } catch {
      return;
    }
    const usage = (u) => (u ? `${u.cpu_seconds.toFixed(1)} s CPU, peak ${bytes(u.memory_peak_bytes)}` : null);
    const rows = [
      ["Current tool", t.current_tool || "—"],
      ["Reported CPU", `${Number(t.cpu_usage).toFixed(1)} %`],
      ["Reported memory", `${Number(t.ram_usage_mb).toFixed(1)} MiB`],
      ["Reported at", t.timestamp ? when(t.timestamp) : "no report yet"],
      ["Measured", t.measured ? `${t.measured.role}: ${t.measured.cpu_usage === null ? "—" : `${t.measured.cpu_usage.toFixed(1)} %`} CPU, ${t.measured.ram_usage_mb === null ? "—" : `${t.measured.ram_usage_mb.toFixed(1)} MiB`}` : null],
      ["Builder used", usage(status.builder_usage)],
      ["Checker used", usage(status.checker_usage)],
    ];
    replace(telemetry, rows.filter(([, v]) => v !== null).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  async function loadAudit() {
    if (!["awaiting_approval", "approved", "completed", "rejected", "expired", "failed"].includes(status.status)) {
      replace(audit);
      return;
    }
    let report = null;
    try {
      report = await get(`/jobs/${id}/audit`);
    } catch {
      report = null;
    }
    replace(audit, auditReport(report));
  }

  function poll() {
    clearTimeout(timer);
    if (stopped || TERMINAL.has(status.status)) return;
    timer = setTimeout(async () => {
      refreshSoon();
      await Promise.all([loadTelemetry(), loadEvents()]);
      poll();
    }, TELEMETRY_MS);
  }

  let refreshing = null;
  function refreshSoon() {
    clearTimeout(refreshing);
    refreshing = setTimeout(async () => {
      let fresh;
      try {
        fresh = await get(`/jobs/${id}/status`);
      } catch {
        return;
      }
      if (stopped || fresh.resource_version === status.resource_version) return;
      status = fresh;
      render();
      loadEvents();
      loadTelemetry();
      loadAudit();
      poll();
    }, 150);
  }

  let unfollow = () => {};
  let lastSeq = 0;
  let streamEnded = false;
  const seen = (message) => {
    if (typeof message.seq === "number" && message.seq > lastSeq) lastSeq = message.seq;
  };
  function listen() {
    unfollow();
    streamEnded = false;
    unfollow = follow(id, {
      log: (line) => {
        seen(line);
        terminal.add(line);
      },
      egress: (e) => {
        seen(e);
        terminal.add({ role: e.role, attempt: e.attempt, stream: "stderr", timestamp: e.last_at || e.first_at, message: `[egress] ${e.host}:${e.port} ${e.verdict}${e.reason ? `: ${e.reason}` : ""}` });
      },
      // A status message says that the job moved; the page reads the whole
      // status itself (a stream message has no queue place), once for a
      // burst (a replay).
      status: (update) => {
        seen(update);
        refreshSoon();
      },
      state: (state, seconds) => {
        if (state === "live") terminal.status("live", "live");
        else if (state === "reconnecting") terminal.status(`reconnecting in ${seconds} s…`, "warn");
        else {
          streamEnded = true;
          terminal.status("ended", "ended");
          if (terminal.empty()) savedLogs();
        }
      },
    }, lastSeq);
  }

  load().then((found) => {
    if (!found || stopped) return;
    poll();
    listen();
  });

  /** An agent not followed live (an older job) left its output saved. */
  async function savedLogs() {
    try {
      const logs = await get(`/jobs/${id}/logs`);
      for (const log of logs) {
        for (const line of log.log.split("\n").filter(Boolean)) {
          terminal.add({ role: log.role, attempt: log.attempt, message: line, timestamp: log.saved_at });
        }
      }
      if (terminal.empty()) terminal.note("No output was kept for this job.");
    } catch {
      terminal.note("No output was kept for this job.");
    }
  }

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(refreshing);
    unfollow();
  };
}

/** Where an approved change went: its branch, commit and pull request. */
export function published(status) {
  const web = webUrl(status.source && status.source.repository);
  const link = (text, href, idName) => (href ? h("a", { href, target: "_blank", rel: "noopener noreferrer", id: idName, class: "mono" }, text) : h("span", { class: "mono", id: idName }, text));
  return h("div", { class: "callout ok", id: "published" },
    h("strong", {}, "Published"),
    h("dl", { class: "terms compact" },
      status.branch ? [h("dt", {}, "Branch"), h("dd", {}, link(status.branch, web && `${web}/tree/${encodeURIComponent(status.branch)}`, "branch"))] : null,
      status.commit ? [h("dt", {}, "Commit"), h("dd", {}, link(status.commit.slice(0, 12), web && `${web}/commit/${status.commit}`, "commit"))] : null,
      status.pull_request_url ? [h("dt", {}, "Pull request"), h("dd", {}, link(status.pull_request_url, status.pull_request_url, "pull-request"))] : null));
}

/** The web page of an https repository (`https://host/owner/name.git` → without `.git`). */
function webUrl(repository) {
  if (!repository || !/^https:\/\//i.test(repository)) return null;
  return repository.replace(/\.git$/, "").replace(/\/$/, "");
}

