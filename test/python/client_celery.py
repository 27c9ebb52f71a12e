"""Submits the Celery tasks of celery_tasks.py to the running worker and prints what came back as JSON."""
import json

import keybrake
from celery_tasks import bill_order, bill_over_cap

seen = {}
# Charged, then the answer "lost" three times: four tries, each with a fresh vault key, one charge at Stripe.
seen["retried"] = bill_order.delay(order_id="o-1", amount_cents=2900, lose_answers=3).get(timeout=60)

over = bill_over_cap.delay(order_id="o-2", amount_cents=2900)
over.get(timeout=60, propagate=False)
error = over.result
seen["over_cap"] = {
    "state": over.state,
    "type": type(error).__name__,
    "is_cap_exhausted": isinstance(error, keybrake.CapExhausted),
    "cap_usd": getattr(error, "cap_usd", None),
    "price_usd": getattr(error, "price_usd", None),
}
print(json.dumps(seen))
