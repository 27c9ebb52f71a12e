"""The Airflow and Dagster helpers with stand-ins for what neither framework can be installed here to provide
(their decorators, a task's context, a resource's init context), the SDK helpers, typed errors and dry runs.

Run by test/python-client.test.ts with KEYBRAKE_URL, KEYBRAKE_TOKEN (an issuer token) and KB_ADMIN (the admin
token, for what an operator reads); prints what it observed as one JSON object.
"""
import json
import os
import sys
import types

import httpx
import requests
import stripe

import keybrake

seen = {}
admin = keybrake.Keybrake(token=os.environ["KB_ADMIN"])


# --- Airflow: stand-ins for airflow.decorators.task and TriggerRule; the task bodies run as Airflow runs them.
def task(**options):
    def decorate(fn):
        fn.airflow_options = options
        return fn

    return decorate


modules = {name: types.ModuleType(name) for name in ["airflow", "airflow.decorators", "airflow.utils", "airflow.utils.trigger_rule"]}
modules["airflow.decorators"].task = task
modules["airflow.utils.trigger_rule"].TriggerRule = types.SimpleNamespace(ALL_DONE="all_done")
sys.modules.update(modules)

mint, revoke = keybrake.airflow_tasks(label_prefix="airflow-billing/", vendor="stripe", daily_usd_cap=50, expires_in="6h",
                                      allowed_endpoints=["POST /v1/payment_intents"], require_idempotency_key=True)
context = {"run_id": "scheduled__2026-11-22T06:00:00+00:00", "dag": types.SimpleNamespace(dag_id="billing")}
xcom = mint(**context)


def charge_customer(customer_id, key):
    """The DAG's mapped charge task, from the key in XCom; run twice for the same customer: Airflow's retry."""
    vault_key = keybrake.VaultKey.from_dict(key)
    stripe.api_key = vault_key.secret
    stripe.api_base = vault_key.stripe_base
    with keybrake.translated():
        return stripe.PaymentIntent.create(amount=2900, currency="usd", customer=customer_id,
                                           idempotency_key=vault_key.idempotency_key(customer_id))


first = charge_customer("cus_1", xcom)
retry = charge_customer("cus_1", xcom)
try:
    charge_customer("cus_2", xcom)
    cap = "not raised"
except keybrake.CapExhausted as e:
    cap = {"code": e.code, "cap": e.cap, "cap_usd": e.cap_usd, "spent_usd": e.spent_usd, "price_usd": e.price_usd,
           "resets_at": e.resets_at is not None, "retryable": e.retryable, "status": e.status}
# A task that forgot idempotency_key=: stripe-python's random key does not satisfy the key's requirement.
try:
    with keybrake.translated():
        stripe.PaymentIntent.create(amount=100, currency="usd", customer="cus_3")
    forgot = "not raised"
except keybrake.IdempotencyKeyRequired as e:
    forgot = e.code
revoke(xcom)
seen["airflow"] = {
    "label": xcom["label"],
    "scope": xcom["scope"],
    "retry_same_intent": first.id == retry.id,
    "cap": cap,
    "forgot_idempotency_key": forgot,
    "revoke_trigger_rule": revoke.airflow_options["trigger_rule"],
    "status_after": admin.spend(xcom["id"])["status"],
}

# --- Dagster: a stand-in for dagster.resource; the run's init context; the resource torn down as Dagster does.
modules = {"dagster": types.ModuleType("dagster")}
modules["dagster"].resource = lambda config_schema=None: (lambda fn: fn)
sys.modules.update(modules)
resource = keybrake.dagster_resource(vendor="stripe", expires_in="4h", allowed_endpoints=["POST /v1/payment_intents"])
init_context = types.SimpleNamespace(run_id="8a1c2f", resource_config={"daily_usd_cap": 30})
running = resource(init_context)
key = next(running)
stripe.api_base = key.stripe_base
charged = stripe.PaymentIntent.create(amount=1000, currency="usd", api_key=key.secret, idempotency_key=key.idempotency_key("cus_7"))
during = admin.spend(key)
running.close()  # the run ended: Dagster closes the resource's generator
seen["dagster"] = {"label": key.label, "daily_usd_cap": during["daily_usd_cap"], "spent": during["spent_today_usd"],
                   "status_after": admin.spend(key)["status"]}

# --- A block that raises: the key is revoked all the same.
kb = keybrake.Keybrake()
try:
    with kb.vault_key(vendor="resend", daily_usd_cap=1, label="celery-digest/2026-11-22", allowed_endpoints=["POST /emails"]) as mail_key:
        sent = httpx.post(f"{keybrake.resend_base(mail_key)}/emails", headers={**mail_key.headers, "Idempotency-Key": mail_key.idempotency_key("u1")},
                          json={"from": "ops@example.com", "to": ["a@example.com"], "subject": "Hi", "text": "Hello"})
        sent.raise_for_status()
        raise RuntimeError("the digest job crashed")
except RuntimeError:
    pass
seen["resend"] = {"id": sent.json()["id"], "status_after": admin.spend(mail_key)["status"]}

# --- Twilio through the client's helper.
with kb.vault_key(vendor="twilio", daily_usd_cap=1, label="celery-notify/1", allowed_endpoints=["POST /2010-04-01/Accounts/*/Messages.json"]) as sms_key:
    message = keybrake.twilio_client(sms_key).messages.create(to="+15551230000", from_="+15559870000", body="Your order shipped")
seen["twilio"] = {"sid": message.sid}

# --- Typed errors from the client's own calls, and from requests.
try:
    kb.mint("stripe", daily_usd_cap=100_000, label="flask-too-big", allowed_endpoints=["/v1/payment_intents"])
    policy = "not raised"
except keybrake.PolicyViolation as e:
    policy = {"rule": e.rule, "status": e.status}
seen["policy"] = policy
with kb.vault_key(vendor="stripe", daily_usd_cap=1, label="flask-typed", allowed_endpoints=["/v1/payment_intents"]) as small:
    response = requests.post(f"{small.stripe_base}/v1/payment_intents", headers=small.headers, data={"amount": 2900, "currency": "usd"})
    try:
        response.raise_for_status()
    except requests.HTTPError as e:
        typed = keybrake.error_of(e)
        seen["requests_error"] = {"type": type(typed).__name__, "remaining_usd": typed.remaining_usd}
    # --- A dry run with the client.
    seen["price"] = kb.price(small, "POST", "/stripe/v1/payment_intents", "amount=50&currency=usd")
    seen["price_over"] = kb.price(small, "POST", "/stripe/v1/payment_intents", {"amount": 2900, "currency": "usd"})["decision"]
seen["repr"] = repr(small)
print(json.dumps(seen))
