"""The seed's Celery billing task, rewritten with the client: a fresh vault key for every try, revoked when the
try ends, and an Idempotency-Key stable across tries. Loaded by the worker test/python-client.test.ts starts
(broker and results on a throwaway redis-server) and by client_celery.py, which submits the tasks.
"""
import os

import stripe
from celery import Celery

import keybrake

app = Celery("celery_tasks", broker=os.environ["CELERY_BROKER"], backend=os.environ["CELERY_BROKER"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"], worker_hijack_root_logger=False)
stripe.api_base = keybrake.stripe_base()

ENDPOINTS = ["/v1/payment_intents", "/v1/payment_intents/*"]


class AnswerLost(Exception):
    """The worker lost the vendor's answer (a timeout, a crash) after the charge went through."""


@app.task(bind=True, max_retries=3)
@keybrake.celery_vault_key(label="celery-billing-{order_id}", vendor="stripe", daily_usd_cap=50, expires_in="30m",
                           allowed_endpoints=ENDPOINTS)
def bill_order(self, *, order_id, amount_cents, lose_answers, vault_key):
    intent = stripe.PaymentIntent.create(amount=amount_cents, currency="usd", api_key=vault_key.secret,
                                         idempotency_key=vault_key.idempotency_key(order_id))
    if self.request.retries < lose_answers:
        raise self.retry(exc=AnswerLost(intent.id), countdown=0)
    return {"id": intent.id, "tries": self.request.retries + 1, "key_id": vault_key.id}


@app.task(bind=True, max_retries=3)
@keybrake.celery_vault_key(label="celery-billing-{order_id}", vendor="stripe", daily_usd_cap=5, expires_in="30m",
                           allowed_endpoints=ENDPOINTS)
def bill_over_cap(self, *, order_id, amount_cents, vault_key):
    try:
        return stripe.PaymentIntent.create(amount=amount_cents, currency="usd", api_key=vault_key.secret,
                                           idempotency_key=vault_key.idempotency_key(order_id)).id
    except stripe.error.StripeError as e:
        refusal = keybrake.error_of(e)
        if refusal is not None and not refusal.retryable:
            raise refusal from e  # a deliberate stop (the cap): fails the task, no retry
        raise self.retry(exc=e, countdown=(refusal and refusal.retry_after) or 1)
