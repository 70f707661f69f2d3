"""Schemathesis hooks for the contract test (SCHEMATHESIS_HOOKS points here).

`GET /jobs/{job_id}/stream` answers a WebSocket handshake with 101 Switching
Protocols, after which the connection carries the WebSocket, not HTTP.
Schemathesis's client (requests) would hand that connection back to its pool
and send its next request on it, then read WebSocket frames as the answer.
So a 101 closes the connection it came on, as a WebSocket client would take
it over: the next request opens a new one.
"""

import requests.adapters

_build_response = requests.adapters.HTTPAdapter.build_response


def _build_response_closing_upgrades(self, req, resp):
    if resp.status == 101:
        resp.close()
    return _build_response(self, req, resp)


requests.adapters.HTTPAdapter.build_response = _build_response_closing_upgrades


import schemathesis


@schemathesis.hook
def before_call(context, case, **kwargs):
    """`GET /jobs/{job_id}/logs?follow=true` is a stream that lasts until the
    job ends, which a request that reads the whole answer would wait for:
    such a case is sent without `follow` (the followed log, its formats and
    its resumption are tested in tests/integration/live_logs.rs). Invalid
    values of `follow` are sent as generated: they must still get 422."""
    if case.path != "/jobs/{job_id}/logs" or not isinstance(case.query, dict):
        return
    if str(case.query.get("follow", "")).lower() in ("true", "1"):
        case.query["follow"] = "false"
        params = kwargs.get("params")
        if isinstance(params, dict) and "follow" in params:
            params["follow"] = "false"
