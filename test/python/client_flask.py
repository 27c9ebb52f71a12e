"""The seed's Flask tool server, rewritten with the client: a key per request, revoked at teardown.

Run by test/python-client.test.ts with KEYBRAKE_URL and KEYBRAKE_TOKEN (an issuer token) set; prints what it
observed as one JSON object.
"""
import json

import stripe
from flask import Flask, g, jsonify, request

import keybrake

app = Flask(__name__)
stripe.api_base = keybrake.stripe_base()  # KEYBRAKE_URL + /stripe, once: every request's key goes per call
keybrake.flask_vault_keys(
    app,
    vendor="stripe",
    daily_usd_cap=100,
    expires_in="5m",
    allowed_endpoints=["/v1/payment_intents", "/v1/payment_intents/*"],
    label=lambda r: f"flask-{r.headers.get('X-User-Id', 'anonymous')}-{r.headers.get('X-Agent-Run-Id', 'unknown')}",
)


@app.post("/tools/charge")
def charge_tool():
    data = request.get_json()
    key = g.vault_key
    try:
        with keybrake.translated():
            intent = stripe.PaymentIntent.create(
                amount=data["amount_cents"],
                currency="usd",
                customer=data["customer_id"],
                api_key=key.secret,
                idempotency_key=key.idempotency_key(data["customer_id"], data["amount_cents"]),
            )
    except keybrake.CapExhausted as e:
        return jsonify({"error": "spend_cap_exceeded", "cap_usd": e.cap_usd, "price_usd": e.price_usd, "retryable": e.retryable}), 402
    return jsonify({"id": intent.id, "amount": intent.amount, "key_id": key.id})


@app.post("/tools/flaky")
def flaky_tool():
    # The tool spends, then fails: the request's key is revoked all the same.
    stripe.PaymentIntent.create(amount=500, currency="usd", api_key=g.vault_key.secret, idempotency_key=g.vault_key.idempotency_key("flaky"))
    raise RuntimeError("the tool crashed after its call")


@app.get("/health")
def health():
    return jsonify({"has_key": "vault_key" in g})


client = app.test_client()
user = {"X-User-Id": "u1", "X-Agent-Run-Id": "r1"}
seen = {}
charged = client.post("/tools/charge", json={"amount_cents": 1200, "customer_id": "cus_9"}, headers=user)
seen["charge"] = {"status": charged.status_code, **charged.get_json()}
big = client.post("/tools/charge", json={"amount_cents": 20000, "customer_id": "cus_9"}, headers={**user, "X-Agent-Run-Id": "r2"})
seen["big"] = {"status": big.status_code, **big.get_json()}
seen["flaky_status"] = client.post("/tools/flaky", headers={**user, "X-Agent-Run-Id": "r3"}).status_code
seen["health"] = client.get("/health").get_json()
print(json.dumps(seen))
