"""A refund job with stripe-python (Debian's python3-stripe) against a key that asks a person above $500.

Run by test/approvals-binary.test.ts with KB (Keybrake's URL), KB_ADMIN (the admin token, which mints the key),
KB_APPROVER (an approver token: the person) and CHARGE (a $4,000 charge at the mock) in the environment. Prints one
JSON object of what it observed; the TypeScript test asserts on it, on the mock and on the ledger.
"""
import json
import os

import httpx
import stripe

KB = os.environ["KB"]
seen = {}

key = httpx.post(
    f"{KB}/vault/keys",
    headers={"Authorization": f"Bearer {os.environ['KB_ADMIN']}"},
    json={
        "vendor": "stripe",
        "daily_usd_cap": 5000,
        "allowed_endpoints": ["POST /v1/refunds"],
        "approval_above_usd": 500,
        "expires_in": "6h",
        "agent_run_label": "refund-job/run_1",
    },
).json()
seen["key_id"] = key["id"]
stripe.api_key = key["vault_key"]
stripe.api_base = f"{KB}/stripe"


def refund():
    # A full refund of the charge: priced from the charge, read before the call. The same idempotency key on
    # every attempt, as a retried task sends it.
    return stripe.Refund.create(charge=os.environ["CHARGE"], idempotency_key="refund-order-42")


try:
    refund()
    seen["first"] = "not raised"
except stripe.error.PermissionError as e:
    seen["first"] = {
        "status": e.http_status,
        "code": e.json_body["code"],
        "approval_id": e.json_body["error"]["details"]["approval_id"],
        "retry_after": e.headers.get("Retry-After"),
    }

# Still pending: the job's retry gets the same answer.
try:
    refund()
    seen["pending_retry"] = "not raised"
except stripe.error.PermissionError as e:
    seen["pending_retry"] = e.json_body["code"]

# The person approves through the API.
approved = httpx.post(
    f"{KB}/approvals/{seen['first']['approval_id']}/approve",
    headers={"Authorization": f"Bearer {os.environ['KB_APPROVER']}"},
)
seen["approve"] = {"status": approved.status_code, "approval_status": approved.json()["status"]}

retry = refund()
seen["retry"] = {"id": retry.id, "amount": retry.amount, "replayed": retry.last_response.headers.get("X-Keybrake-Replayed")}
again = refund()
seen["again"] = {"id": again.id, "replayed": again.last_response.headers.get("X-Keybrake-Replayed")}

print(json.dumps(seen))
