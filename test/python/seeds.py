"""The seeds' own client code (Python stripe, httpx, requests, twilio), with only the base URL changed.

Run by test/python-seeds.test.ts with KB (Keybrake's URL) and KB_ADMIN (the admin token) in the environment.
Prints one JSON object of what it observed; the TypeScript test asserts on it and on the mocks.
"""
import json
import os

import httpx
import requests
import stripe
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

KB = os.environ["KB"]
ADMIN = os.environ["KB_ADMIN"]
seen = {}

# Airflow seed: issue a per-run key with httpx, then stripe-python with api_base pointed at Keybrake.
r = httpx.post(
    f"{KB}/vault/keys",
    headers={"Authorization": f"Bearer {ADMIN}"},
    json={
        "vendor": "stripe",
        "daily_usd_cap": 50.0,
        "allowed_endpoints": ["POST /v1/payment_intents"],
        "expires_in": "6h",
        "agent_run_label": "airflow-billing/manual__2026-11-27",
    },
)
vault_key = r.json()["vault_key"]
stripe.api_key = vault_key
stripe.api_base = f"{KB}/stripe"
run_id = "manual__2026-11-27"
first = stripe.PaymentIntent.create(amount=2900, currency="usd", customer="cus_1", idempotency_key=f"{run_id}-cus_1")
retry = stripe.PaymentIntent.create(amount=2900, currency="usd", customer="cus_1", idempotency_key=f"{run_id}-cus_1")
seen["airflow"] = {"id": first.id, "retry_id": retry.id, "amount": first.amount}
try:
    stripe.PaymentIntent.create(amount=2900, currency="usd", customer="cus_2", idempotency_key=f"{run_id}-cus_2")
    seen["cap"] = "not raised"
except stripe.error.RateLimitError as e:
    # stripe-python 5 builds RateLimitError without the code; the body and the header carry it.
    seen["cap"] = {"code": e.json_body["code"], "cap_hit": e.headers.get("x-keybrake-cap-hit"), "status": e.http_status}

# Flask seed: /v1/keys with `label`, a JSON body to /stripe/v1/payment_intents with requests, revoke with DELETE.
resp = requests.post(
    f"{KB}/v1/keys",
    headers={"Authorization": f"Bearer {ADMIN}"},
    json={
        "label": "flask-u1-r1",
        "vendor": "stripe",
        "allowed_endpoints": ["/v1/payment_intents", "/v1/payment_intents/*"],
        "daily_usd_cap": 1000,
        "expires_in": "5m",
    },
    timeout=5,
)
resp.raise_for_status()
key_data = resp.json()
charge = requests.post(
    f"{KB}/stripe/v1/payment_intents",
    headers={"Authorization": f"Bearer {key_data['token']}"},
    json={"amount": 1200, "currency": "usd", "customer": "cus_9"},
)
big = requests.post(
    f"{KB}/stripe/v1/payment_intents",
    headers={"Authorization": f"Bearer {key_data['token']}"},
    json={"amount": 200000, "currency": "usd", "customer": "cus_9"},
)
requests.delete(f"{KB}/v1/keys/{key_data['id']}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
after = requests.post(
    f"{KB}/stripe/v1/payment_intents",
    headers={"Authorization": f"Bearer {key_data['token']}"},
    json={"amount": 100, "currency": "usd"},
)
seen["flask"] = {
    "charge_status": charge.status_code,
    "big_status": big.status_code,
    "big_code": big.json().get("code"),
    "after_revoke": after.json().get("code"),
}

# README: the Python twilio client with a custom base.
twilio_key = httpx.post(
    f"{KB}/vault/keys",
    headers={"Authorization": f"Bearer {ADMIN}"},
    json={"vendor": "twilio", "daily_usd_cap": 1, "allowed_endpoints": ["POST /2010-04-01/Accounts/*/Messages.json"]},
).json()["vault_key"]


class KeybrakeHttpClient(TwilioHttpClient):
    def request(self, method, url, *args, **kwargs):
        url = url.replace("https://api.twilio.com", f"{KB}/twilio")
        return super().request(method, url, *args, **kwargs)


client = Client("AC00000000000000000000000000000000", twilio_key, http_client=KeybrakeHttpClient())
message = client.messages.create(to="+15551230000", from_="+15559870000", body="Your order shipped")
seen["twilio"] = {"sid": message.sid}

# README: Resend through httpx.
resend_key = httpx.post(
    f"{KB}/vault/keys",
    headers={"Authorization": f"Bearer {ADMIN}"},
    json={"vendor": "resend", "daily_usd_cap": 1, "allowed_endpoints": ["POST /emails"]},
).json()["vault_key"]
email = httpx.post(
    f"{KB}/resend/emails",
    headers={"Authorization": f"Bearer {resend_key}", "Idempotency-Key": "run-1-user-1"},
    json={"from": "ops@example.com", "to": ["a@example.com"], "subject": "Hi", "text": "Hello"},
)
email.raise_for_status()
seen["resend"] = {"id": email.json()["id"]}

print(json.dumps(seen))
