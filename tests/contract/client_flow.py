"""A job's life through a client generated from Icarus's OpenAPI document.

Run by tests/integration/openapi_contract.rs, with the package that
openapi-python-client generated on PYTHONPATH as `icarus_client`:

    python client_flow.py BASE_URL TOKEN

Spawns a job, follows it to awaiting_approval, reads its diff (both forms)
and audit, approves the snapshot it was shown, follows it to completed, and
prints what it saw as one JSON object. Every call but the text diff goes
through the generated functions and models; any answer they do not expect
(an undocumented status, a body of another shape) fails the script.
"""

import json
import sys
import time

from icarus_client import AuthenticatedClient
from icarus_client.api.jobs import (
    approve_job,
    get_job_audit,
    get_job_diff,
    get_job_status,
    list_job_events,
    spawn_job,
)
from icarus_client.models import (
    ApproveRequest,
    AuditResponse,
    DecisionResponse,
    DiffFormat,
    DiffResponse,
    JobStatusResponse,
    Phase,
    SpawnRequest,
    SpawnResponse,
)

TERMINAL = {Phase.COMPLETED, Phase.REJECTED, Phase.FAILED, Phase.CANCELLED}


def expect(value, kind, what):
    if not isinstance(value, kind):
        raise SystemExit(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


def follow(client, job_id, phase, seen):
    """Polls the status until the job reaches `phase` (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        status = expect(
            get_job_status.sync(job_id, client=client), JobStatusResponse, "status"
        )
        if not seen or seen[-1] != status.status.value:
            seen.append(status.status.value)
        if status.status == phase:
            return status
        if status.status in TERMINAL or time.monotonic() > deadline:
            raise SystemExit(f"the job is {status.status.value}, never {phase.value}: {status}")
        time.sleep(0.2)


def main():
    base_url, token = sys.argv[1], sys.argv[2]
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    with client:
        spawned = expect(
            spawn_job.sync(client=client, body=SpawnRequest(task="Add a greeting")),
            SpawnResponse,
            "spawn",
        )
        job_id = spawned.job_id
        seen = []
        waiting = follow(client, job_id, Phase.AWAITING_APPROVAL, seen)

        diff = expect(
            get_job_diff.sync(job_id, client=client, format_=DiffFormat.JSON),
            DiffResponse,
            "diff",
        )
        # The generator reads only the JSON form of a response documented in
        # two; the text form is read with the client's own HTTP connection.
        text = client.get_httpx_client().get(f"/jobs/{job_id}/diff")
        if text.status_code != 200 or not text.headers["content-type"].startswith("text/plain"):
            raise SystemExit(f"text diff: {text.status_code} {text.headers}")
        if text.headers["x-icarus-snapshot"] != waiting.snapshot:
            raise SystemExit("the text diff names another snapshot")
        audit = expect(get_job_audit.sync(job_id, client=client), AuditResponse, "audit")

        decision = expect(
            approve_job.sync(
                job_id,
                client=client,
                body=ApproveRequest(approved=True, comment="LGTM", snapshot=diff.snapshot),
            ),
            DecisionResponse,
            "approve",
        )
        done = follow(client, job_id, Phase.COMPLETED, seen)
        events = list_job_events.sync(job_id, client=client)
        print(
            json.dumps(
                {
                    "job_id": str(job_id),
                    "phases_seen": seen,
                    "events": [event.to.value for event in events],
                    "diff_files": [change.path for change in diff.files],
                    "snapshot": diff.snapshot,
                    "audit_keys": sorted(audit.audit_report.to_dict()),
                    "decision": decision.status.value,
                    "approved_by": done.approval.decided_by,
                }
            )
        )


if __name__ == "__main__":
    main()
