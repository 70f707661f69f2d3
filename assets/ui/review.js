// The review page: the builder's change next to the checker's audit report,
// and the decision. The decision quotes the snapshot the page was shown
// (the diff's `snapshot`), so if the change was replaced underneath, the
// server refuses it (409) instead of publishing what nobody saw.

import { atLeast, get, getWithHeaders, post } from "./api.js";
import { h, page, replace } from "./dom.js";
import { badge, shortId } from "./format.js";
import { auditReport } from "./audit.js";
import { diffView } from "./diff.js";
import { published } from "./job.js";
import { firstLine } from "./jobs.js";

export function reviewPage(view, id) {
  const head = h("div", { class: "page-head" });
  const decision = h("div", { id: "decision-panel" });
  const changes = h("div", { class: "review-diff" }, h("p", { class: "muted" }, "Loading the diff…"));
  const audit = h("div", { id: "review-audit-report" });
  page(`Review ${shortId(id)}`,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ",
      h("a", { href: `#/jobs/${id}`, class: "mono" }, shortId(id)), " / review"),
    head,
    h("div", { class: "review" }, changes, h("aside", { class: "review-audit", "aria-label": "Decision and audit report" }, decision, audit)));

  let stopped = false;

  async function load() {
    let status;
    try {
      status = await get(`/jobs/${id}/status`);
    } catch (error) {
      view.showError(error);
      return;
    }
    replace(head, h("div", {}, h("h1", { class: "task-title" }, `Review: ${firstLine(status.task)}`),
      h("p", { class: "muted" }, badge(status.status), " ", status.reason)));
    const [diff, report] = await Promise.all([
      getWithHeaders(`/jobs/${id}/diff?format=json`).then((a) => a.body).catch((error) => error),
      get(`/jobs/${id}/audit`).catch(() => null),
    ]);
    if (stopped) return;
    replace(audit, auditReport(report));
    if (diff instanceof Error) {
      replace(changes, h("p", { class: "callout" }, diff.status === 409 ? diff.detail : `The diff cannot be shown: ${diff.message}`));
    } else {
      const started = performance.now();
      replace(changes, diffView(diff));
      changes.dataset.renderMs = String(Math.round(performance.now() - started));
    }
    renderDecision(status, diff instanceof Error ? null : diff);
  }

  function renderDecision(status, diff) {
    if (status.approval) {
      const a = status.approval;
      replace(decision, h("div", { class: `callout ${a.approved ? "ok" : "warn"}`, id: "decided" },
        h("strong", {}, `${a.approved ? "Approved" : "Rejected"} by ${a.decided_by || "unknown"}`),
        a.comment ? h("pre", { class: "wrap" }, a.comment) : null),
        status.branch || status.commit || status.pull_request_url ? published(status) : null);
      return;
    }
    if (status.status !== "awaiting_approval") {
      replace(decision, h("p", { class: "callout" }, `This job is ${status.status.replaceAll("_", " ")}; there is nothing to decide.`));
      return;
    }
    if (!atLeast(view.me, "approver")) {
      replace(decision, h("p", { class: "callout", id: "cannot-decide" },
        `Approving or rejecting needs the approver role; ${view.me.name} is a ${view.me.role}.`));
      return;
    }
    const comment = h("textarea", { id: "comment", name: "comment", rows: 3, maxlength: 16384, "aria-describedby": "bound-to" });
    const error = h("p", { class: "field-error", id: "decision-error", role: "alert" });
    const approve = h("button", { type: "button", class: "primary", id: "approve" }, "Approve");
    const reject = h("button", { type: "button", class: "danger", id: "reject" }, "Reject");
    const snapshot = diff && diff.snapshot;
    const decide = async (approved) => {
      error.textContent = "";
      if (!approved && !comment.value.trim()) {
        error.textContent = "Say why you reject it: the comment goes to the submitter.";
        comment.focus();
        return;
      }
      approve.disabled = true;
      reject.disabled = true;
      const body = { approved, comment: comment.value };
      if (snapshot) body.snapshot = snapshot;
      try {
        await post(`/jobs/${id}/approve`, body);
        location.hash = `#/jobs/${id}`;
      } catch (failure) {
        approve.disabled = false;
        reject.disabled = false;
        error.textContent = failure.status === 409
          ? `Refused (409): ${failure.detail} Reload the page to see the job as it is now.`
          : failure.status === 403 ? `Not allowed (403): ${failure.detail}` : failure.message;
      }
    };
    approve.addEventListener("click", () => decide(true));
    reject.addEventListener("click", () => decide(false));
    replace(decision, h("form", { class: "card decision", onsubmit: (e) => e.preventDefault() },
      h("h2", {}, "Decision"),
      h("label", { for: "comment" }, "Comment"),
      comment,
      h("p", { class: "hint", id: "bound-to" }, snapshot
        ? ["Your decision is bound to snapshot ", h("span", { class: "mono" }, snapshot.slice(0, 12)), ", the change on this page; if it changed since, the server refuses it."]
        : "This job has no snapshot to bind the decision to."),
      error,
      h("div", { class: "actions" }, approve, reject)));
  }

  load();
  return () => { stopped = true; };
}
