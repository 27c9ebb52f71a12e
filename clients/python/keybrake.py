"""Keybrake's Python client: mint, revoke and read vault keys, and point the vendors' SDKs at Keybrake.

Standard library only (Python >= 3.9). One file: ``pip install ./clients/python``, or fetch it from the
Keybrake you talk to (``GET /clients/python/keybrake.py``) into a container step.

    import keybrake, stripe

    kb = keybrake.Keybrake()                      # KEYBRAKE_URL, and KEYBRAKE_TOKEN (or KEYBRAKE_API_KEY)
    stripe.api_base = kb.stripe_base
    with kb.vault_key(vendor="stripe", daily_usd_cap=500, label="billing/run_1",
                      allowed_endpoints=["POST /v1/payment_intents"]) as key:
        stripe.PaymentIntent.create(amount=2900, currency="usd", api_key=key.secret,
                                    idempotency_key=key.idempotency_key("cus_1"))
    # revoked here, whatever happened in the block

Keybrake's refusals arrive as typed exceptions (``CapExhausted`` with its numbers, ``BudgetExhausted``,
``ApprovalRequired``, ``PolicyViolation`` naming the rule, ...): from the client's own calls, and from a vendor
SDK's or HTTP library's error with ``keybrake.raise_for(error)`` or inside ``with keybrake.translated():``.

Helpers for the orchestrators' patterns: ``airflow_tasks`` (a mint task and a revoke task that runs whatever
happened), ``dagster_resource``, ``celery_vault_key`` (a fresh key per try, idempotency keys stable across
tries), ``flask_vault_keys`` (a key per request, revoked at teardown), and ``python -m keybrake mint ...``
for a shell step (Kestra, Argo) that prints the key for the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union

__version__ = "0.1.0"
__all__ = [
    "Keybrake",
    "VaultKey",
    "KeybrakeError",
    "error_of",
    "raise_for",
    "translated",
    "stripe_base",
    "twilio_client",
    "airflow_tasks",
    "dagster_resource",
    "celery_vault_key",
    "flask_vault_keys",
]


# ----------------------------------------------------------------------------------------------------------
# Errors: Keybrake's error body ({"code", "message", "error": {"type": "keybrake_error", "details"}}) as types
# ----------------------------------------------------------------------------------------------------------


class KeybrakeError(Exception):
    """A refusal of Keybrake's: its ``code``, ``message``, HTTP ``status``, ``details`` and answer ``headers``.

    ``retryable``: whether the same call can succeed later (with the same Idempotency-Key); ``retry_after``:
    the seconds Keybrake asked to wait, when it did.
    """

    retryable = False

    def __init__(self, code: str, message: str, status: int = 0, details: Optional[Mapping[str, Any]] = None,
                 headers: Optional[Mapping[str, str]] = None):
        self.code = code
        self.message = message
        self.status = status
        self.details: Dict[str, Any] = dict(details or {})
        self.headers: Dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        # Every field in `args`: the error pickles, and a task queue's result backend rebuilds it whole.
        super().__init__(code, message, status, self.details, self.headers)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def retry_after(self) -> Optional[float]:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class _LimitHit(KeybrakeError):
    """A cap, a budget or a counterparty cap that this call would exceed: retrying before the reset cannot help."""

    @property
    def cap(self) -> Optional[str]:
        """``daily`` or ``total``."""
        return self.details.get("cap")

    @property
    def cap_usd(self) -> Optional[float]:
        return self.details.get("cap_usd")

    @property
    def spent_usd(self) -> Optional[float]:
        return self.details.get("spent_usd")

    @property
    def held_usd(self) -> Optional[float]:
        return self.details.get("held_usd")

    @property
    def price_usd(self) -> Optional[float]:
        return self.details.get("price_usd")

    @property
    def remaining_usd(self) -> Optional[float]:
        return self.details.get("remaining_usd")

    @property
    def resets_at(self) -> Optional[str]:
        """When a daily cap resets (UTC midnight, ISO 8601); None for a lifetime cap, which never does."""
        return self.details.get("resets_at")


class CapExhausted(_LimitHit):
    """429 cap_exhausted: the key's daily or lifetime cap."""


class BudgetExhausted(_LimitHit):
    """429 budget_exhausted: a budget the key draws from (``budget_id``)."""

    @property
    def budget_id(self) -> Optional[str]:
        return self.details.get("budget_id")


class CounterpartyCapExhausted(_LimitHit):
    """429 counterparty_cap_exhausted: the key's cap for one customer or destination (``counterparty``)."""

    @property
    def counterparty(self) -> Optional[str]:
        return self.details.get("counterparty")


class ApprovalRequired(KeybrakeError):
    """403 approval_required: a person must approve this call; retry it, same Idempotency-Key, once approved."""

    retryable = True

    @property
    def approval_id(self) -> Optional[str]:
        return self.details.get("approval_id")


class ApprovalDenied(KeybrakeError):
    """403 approval_denied: a person refused this call."""


class ApprovalExpired(KeybrakeError):
    """403 approval_expired: nobody decided in time."""


class PolicyViolation(KeybrakeError):
    """403 issuer_policy_violation: the mint asked for more than the token may mint; ``rule`` names the rule."""

    @property
    def rule(self) -> Optional[str]:
        return self.details.get("rule")


class KeyRevoked(KeybrakeError):
    """401 key_revoked: an operator stopped the run; a new run mints a new key."""


class KeyExpired(KeybrakeError):
    """401 key_expired: the run outlived its key."""


class InvalidKey(KeybrakeError):
    """401 invalid_key: no vault key, or one Keybrake does not know."""


class Unauthorized(KeybrakeError):
    """401 unauthorized: the token that mints is missing, unknown, revoked or expired."""


class Forbidden(KeybrakeError):
    """403 forbidden: the token's role does not allow this."""


class NotFound(KeybrakeError):
    """404 not_found."""


class EndpointNotAllowed(KeybrakeError):
    """403 endpoint_not_allowed: the call is not in the key's allowed_endpoints."""


class IdempotencyKeyRequired(KeybrakeError):
    """400 idempotency_key_required: this key needs an Idempotency-Key the job chose (not an SDK's random one)."""


class IdempotencyConflict(KeybrakeError):
    """409 idempotency_conflict: the Idempotency-Key was used for another call; fix the key."""


class IdempotencyInFlight(KeybrakeError):
    """409 idempotency_in_flight: the first attempt is still running; retry shortly with the same key."""

    retryable = True


class RateLimited(KeybrakeError):
    """429 rate_limited: the key's max_requests_per_minute; retry after ``retry_after`` seconds."""

    retryable = True


class StoreUnavailable(KeybrakeError):
    """503 store_unavailable: Keybrake's ledger cannot be reached; nothing was forwarded."""

    retryable = True


class UpstreamError(KeybrakeError):
    """502 upstream_unreachable / 504 upstream_timeout: retry with the same Idempotency-Key."""

    retryable = True


_ERRORS: Dict[str, Type[KeybrakeError]] = {
    "cap_exhausted": CapExhausted,
    "budget_exhausted": BudgetExhausted,
    "counterparty_cap_exhausted": CounterpartyCapExhausted,
    "approval_required": ApprovalRequired,
    "approval_denied": ApprovalDenied,
    "approval_expired": ApprovalExpired,
    "issuer_policy_violation": PolicyViolation,
    "key_revoked": KeyRevoked,
    "key_expired": KeyExpired,
    "invalid_key": InvalidKey,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "endpoint_not_allowed": EndpointNotAllowed,
    "idempotency_key_required": IdempotencyKeyRequired,
    "idempotency_conflict": IdempotencyConflict,
    "idempotency_in_flight": IdempotencyInFlight,
    "rate_limited": RateLimited,
    "store_unavailable": StoreUnavailable,
    "upstream_unreachable": UpstreamError,
    "upstream_timeout": UpstreamError,
}


def error_from_body(status: int, body: Any, headers: Optional[Mapping[str, str]] = None) -> Optional[KeybrakeError]:
    """The typed error of a Keybrake error body, or None when ``body`` is not one (a vendor's own error)."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if not isinstance(error, Mapping) or error.get("type") != "keybrake_error":
        return None
    code = str(error.get("code") or body.get("code"))
    details = error.get("details") if isinstance(error.get("details"), Mapping) else {}
    cls = _ERRORS.get(code, KeybrakeError)
    return cls(code, str(error.get("message") or body.get("message") or code), status, details, headers)


def _parts_of(error: BaseException) -> Optional[Tuple[int, Any, Mapping[str, str]]]:
    """Status, JSON body and headers of an HTTP error raised by stripe-python, twilio, httpx or requests."""
    # stripe-python: StripeError carries the parsed body, the status and the headers.
    if hasattr(error, "json_body") and hasattr(error, "http_status"):
        return int(getattr(error, "http_status") or 0), getattr(error, "json_body"), dict(getattr(error, "headers") or {})
    # httpx.HTTPStatusError and requests.HTTPError carry the response.
    response = getattr(error, "response", None)
    if response is not None and hasattr(response, "status_code"):
        try:
            body = response.json()
        except Exception:
            return None
        return int(response.status_code), body, dict(response.headers)
    # twilio: TwilioRestException carries the status and the code, not the body; Keybrake's code is its `code`.
    if hasattr(error, "status") and isinstance(getattr(error, "code", None), str) and hasattr(error, "msg"):
        body = {"code": error.code, "error": {"type": "keybrake_error", "code": error.code, "message": getattr(error, "msg")}}
        return int(getattr(error, "status") or 0), body, {}
    return None


def error_of(error: BaseException) -> Optional[KeybrakeError]:
    """The typed Keybrake refusal a vendor SDK's or an HTTP library's exception carries, or None (the vendor's
    own error, a network one)."""
    parts = _parts_of(error)
    return error_from_body(*parts) if parts else None


def raise_for(error: BaseException) -> None:
    """Raise the typed Keybrake refusal behind a vendor SDK's or an HTTP library's exception, chained to it; does
    nothing when it carries none."""
    typed = error_of(error)
    if typed:
        raise typed from error


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Inside the block, a vendor SDK's or HTTP library's error that carries a Keybrake refusal is raised typed."""
    try:
        yield
    except KeybrakeError:
        raise
    except Exception as error:
        raise_for(error)
        raise


# ----------------------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------------------


class VaultKey:
    """A minted vault key: ``secret`` (the ``kb_live_…`` the vendor calls carry), ``id``, ``label``, the
    ``record`` Keybrake answered, and where to call (``base(vendor)``, ``stripe_base``, ``headers``).

    ``idempotency_key(*parts)``: an Idempotency-Key stable across retries of the same run (its ``scope`` and the
    parts: the customer, the order), so a retry under a fresh key is still de-duplicated by the vendor.
    """

    def __init__(self, record: Mapping[str, Any], url: str, scope: Optional[str] = None):
        self.record = dict(record)
        self.secret: str = record.get("vault_key") or record.get("token") or ""
        self.id: str = record["id"]
        self.label: Optional[str] = record.get("label")
        self.vendor: str = record.get("vendor", "")
        self.url = url.rstrip("/")
        self.scope = scope if scope is not None else (self.label or self.id)

    def __repr__(self) -> str:
        # Never the secret: reprs end up in logs and tracebacks.
        return f"VaultKey(id={self.id!r}, label={self.label!r}, vendor={self.vendor!r})"

    def base(self, vendor: Optional[str] = None) -> str:
        """Keybrake's address for the vendor's API: ``http://keybrake:8080/stripe``."""
        return f"{self.url}/{vendor or self.vendor}"

    @property
    def stripe_base(self) -> str:
        """For ``stripe.api_base`` (stripe-python)."""
        return self.base("stripe")

    @property
    def headers(self) -> Dict[str, str]:
        """``Authorization: Bearer <vault key>``, for requests and httpx (Resend, or any vendor by plain HTTP)."""
        return {"Authorization": f"Bearer {self.secret}"}

    def idempotency_key(self, *parts: Any) -> str:
        key = "-".join(str(p) for p in (self.scope, *parts))
        if len(key) > 255:
            raise ValueError(f"an Idempotency-Key is at most 255 characters; this one is {len(key)}")
        return key

    def to_dict(self) -> Dict[str, Any]:
        """What passes between tasks (Airflow XCom, a Kestra output): id, secret, label, vendor, URL, scope."""
        return {"id": self.id, "vault_key": self.secret, "label": self.label, "vendor": self.vendor, "url": self.url,
                "scope": self.scope}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VaultKey":
        return cls(data, data["url"], data.get("scope"))


def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class Keybrake:
    """Keybrake's admin API for a job: ``url`` (``KEYBRAKE_URL``) and a token that mints, an issuer token
    preferably (``KEYBRAKE_TOKEN``, or ``KEYBRAKE_API_KEY`` as the seeds call it)."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 10.0):
        url = url or _env("KEYBRAKE_URL")
        token = token or _env("KEYBRAKE_TOKEN", "KEYBRAKE_API_KEY")
        if not url:
            raise ValueError("Keybrake's address is needed: Keybrake(url=...) or KEYBRAKE_URL")
        if not token:
            raise ValueError("a token that mints is needed: Keybrake(token=...) or KEYBRAKE_TOKEN (KEYBRAKE_API_KEY)")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Keybrake(url={self.url!r})"

    @property
    def stripe_base(self) -> str:
        return f"{self.url}/stripe"

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, headers: Optional[Mapping[str, str]] = None,
                 bearer: Optional[str] = None) -> Tuple[int, Dict[str, str], Any]:
        data = None
        sent = {"Authorization": f"Bearer {bearer or self.token}", "Accept": "application/json"}
        if body is not None:
            if isinstance(body, (bytes, str)):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = json.dumps(body).encode()
                sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, answer_headers, raw = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, raw = error.code, dict(error.headers or {}), error.read()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        return status, answer_headers, answer

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, headers, answer = self._request(method, path, body)
        if status >= 400:
            raise error_from_body(status, answer, headers) or KeybrakeError("http_error", f"HTTP {status}: {answer}", status)
        return answer

    # -- keys ------------------------------------------------------------------------------------------------

    def mint(self, vendor: str, *, allowed_endpoints: List[str], daily_usd_cap: Optional[float] = None,
             total_usd_cap: Optional[float] = None, label: Optional[str] = None, expires_in: Optional[str] = "1h",
             scope: Optional[str] = None, **fields: Any) -> VaultKey:
        """POST /vault/keys. ``fields``: any other field of the API (``mode``, ``budget_id``,
        ``require_idempotency_key``, ``enforcement``, ``metadata``, ...). ``scope``: what ``idempotency_key()``
        starts with (default: the label)."""
        body = {"vendor": vendor, "allowed_endpoints": allowed_endpoints, "daily_usd_cap": daily_usd_cap,
                "total_usd_cap": total_usd_cap, "agent_run_label": label, "expires_in": expires_in, **fields}
        record = self._call("POST", "/vault/keys", {k: v for k, v in body.items() if v is not None})
        return VaultKey(record, self.url, scope)

    def revoke(self, key: Union[VaultKey, str]) -> Dict[str, Any]:
        """DELETE /vault/keys/{id}: its very next call is refused. Idempotent."""
        return self._call("DELETE", f"/vault/keys/{urllib.parse.quote(_id_of(key))}")

    def revoke_prefix(self, label_prefix: str) -> int:
        """The kill switch for a run family: every active key whose label starts with it. How many were revoked."""
        return self._call("POST", "/vault/keys/revoke", {"label_prefix": label_prefix})["revoked"]

    def spend(self, key: Union[VaultKey, str]) -> Dict[str, Any]:
        """GET /vault/keys/{id}: ``spent_today_usd``, ``spent_total_usd``, ``held_usd``, ``remaining_today_usd``,
        ``calls``, ``status``, ..."""
        return self._call("GET", f"/vault/keys/{urllib.parse.quote(_id_of(key))}")

    def price(self, key: Union[VaultKey, str], method: str, path: str, body: Any = None,
              headers: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """A dry run (``X-Keybrake-Dry-Run: 1``): what the call would cost and whether the key allows it, without
        making it. ``path`` as the job calls it (``/stripe/v1/refunds``); a dict body is sent as JSON, a string as
        given (form-encoded unless ``headers`` says otherwise). Answers ``{"decision": "allowed" | code, "price_usd",
        ...}``; raises only when there is no verdict (an unknown vault key, Keybrake unreachable)."""
        sent = {"X-Keybrake-Dry-Run": "1", **(headers or {})}
        if isinstance(body, str) and not any(h.lower() == "content-type" for h in sent):
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        secret = key.secret if isinstance(key, VaultKey) else key
        status, answer_headers, answer = self._request(method.upper(), path, body, sent, bearer=secret)
        if status != 200 or not isinstance(answer, dict) or not answer.get("dry_run"):
            raise error_from_body(status, answer, answer_headers) or KeybrakeError("http_error", f"HTTP {status}", status)
        return answer

    @contextlib.contextmanager
    def vault_key(self, vendor: str, **fields: Any) -> Iterator[VaultKey]:
        """A key for the block, revoked when it ends whatever happened (an exception, a return, a generator
        closed). A revocation that fails is warned about, never raised over the block's own exception: the key
        still expires (``expires_in``, default 1h)."""
        key = self.mint(vendor, **fields)
        try:
            yield key
        finally:
            self._revoke_quietly(key)

    def _revoke_quietly(self, key: Union[VaultKey, str]) -> None:
        try:
            self.revoke(key)
        except Exception as error:
            warnings.warn(f"keybrake: could not revoke {_id_of(key)} ({error}); it expires on its own", RuntimeWarning,
                          stacklevel=3)


def _id_of(key: Union[VaultKey, str]) -> str:
    return key.id if isinstance(key, VaultKey) else key


# ----------------------------------------------------------------------------------------------------------
# Vendor SDKs
# ----------------------------------------------------------------------------------------------------------


def stripe_base(where: Union[VaultKey, Keybrake, str, None] = None) -> str:
    """For ``stripe.api_base``: Keybrake's Stripe address, from a key, a client, a URL, or ``KEYBRAKE_URL``."""
    return _base(where, "stripe")


def resend_base(where: Union[VaultKey, Keybrake, str, None] = None) -> str:
    """Keybrake's Resend address (``<base>/emails`` with ``key.headers``, by requests or httpx)."""
    return _base(where, "resend")


def openai_base(where: Union[VaultKey, Keybrake, str, None] = None) -> str:
    """For ``OpenAI(base_url=...)``."""
    return _base(where, "openai") + "/v1"


def anthropic_base(where: Union[VaultKey, Keybrake, str, None] = None) -> str:
    """For ``Anthropic(base_url=...)``."""
    return _base(where, "anthropic")


def _base(where: Union[VaultKey, Keybrake, str, None], vendor: str) -> str:
    url = where.url if isinstance(where, (VaultKey, Keybrake)) else where or _env("KEYBRAKE_URL")
    if not url:
        raise ValueError("Keybrake's address is needed: pass a key, a Keybrake, a URL, or set KEYBRAKE_URL")
    return f"{url.rstrip('/')}/{vendor}"


#: Any account SID will do in Twilio paths: Keybrake puts the real one in.
TWILIO_PLACEHOLDER_SID = "AC" + "0" * 32


def twilio_client(key: VaultKey, account_sid: str = TWILIO_PLACEHOLDER_SID, **kwargs: Any) -> Any:
    """A ``twilio.rest.Client`` that calls Twilio through Keybrake with the vault key."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    base = key.base("twilio")

    class KeybrakeHttpClient(TwilioHttpClient):
        def request(self, method: str, url: str, *args: Any, **options: Any) -> Any:
            return super().request(method, url.replace("https://api.twilio.com", base, 1), *args, **options)

    return Client(account_sid, key.secret, http_client=KeybrakeHttpClient(), **kwargs)


# ----------------------------------------------------------------------------------------------------------
# The orchestrators' patterns
# ----------------------------------------------------------------------------------------------------------

ClientFactory = Callable[[], Keybrake]


def airflow_mint(context: Mapping[str, Any], *, label_prefix: str, client: ClientFactory = Keybrake,
                 **fields: Any) -> Dict[str, Any]:
    """The body of Airflow's mint task: a key labelled ``<label_prefix><run_id>``, as a dict for XCom (its
    idempotency scope is the DAG and run: ``VaultKey.from_dict(x).idempotency_key(customer_id)``)."""
    run_id = context["run_id"]
    dag = context.get("dag")
    scope = f"{getattr(dag, 'dag_id', None) or label_prefix.rstrip('/-:')}-{run_id}"
    return client().mint(label=f"{label_prefix}{run_id}", scope=scope, **fields).to_dict()


def airflow_revoke(key: Optional[Mapping[str, Any]], *, client: ClientFactory = Keybrake) -> None:
    """The body of Airflow's revoke task. A mint that failed left nothing to revoke."""
    if key:
        client().revoke(key["id"])


def airflow_tasks(*, label_prefix: str, client: ClientFactory = Keybrake, **fields: Any) -> Tuple[Any, Any]:
    """Two TaskFlow tasks: ``mint_vault_key`` (the run's key, to XCom) and ``revoke_vault_key``
    (``trigger_rule=all_done``: it runs whatever the tasks between did)::

        mint, revoke = keybrake.airflow_tasks(label_prefix="airflow-billing/", vendor="stripe",
                                              daily_usd_cap=500, expires_in="6h",
                                              allowed_endpoints=["POST /v1/payment_intents"])
        key = mint()
        charge.partial(key=key).expand(customer_id=get_customer_ids()) >> revoke(key)

    The client is made in the task (on the worker, from its environment), never when the DAG file is parsed.
    """
    from airflow.decorators import task
    from airflow.utils.trigger_rule import TriggerRule

    @task(task_id="mint_vault_key")
    def mint_vault_key(**context: Any) -> Dict[str, Any]:
        return airflow_mint(context, label_prefix=label_prefix, client=client, **fields)

    @task(task_id="revoke_vault_key", trigger_rule=TriggerRule.ALL_DONE)
    def revoke_vault_key(key: Optional[Dict[str, Any]]) -> None:
        airflow_revoke(key, client=client)

    return mint_vault_key, revoke_vault_key


def dagster_vault_key(init_context: Any, *, label_prefix: str = "dagster/", client: ClientFactory = Keybrake,
                      **fields: Any) -> Iterator[VaultKey]:
    """The body of a Dagster resource: the run's key (labelled ``<label_prefix><run_id>``), revoked at the
    run's end. The resource's config adds to or overrides ``fields`` (``daily_usd_cap``, ...)."""
    config = dict(getattr(init_context, "resource_config", None) or {})
    run_id = init_context.run_id
    with client().vault_key(label=f"{label_prefix}{run_id}", scope=f"dagster-{run_id}", **{**fields, **config}) as key:
        yield key


def dagster_resource(*, label_prefix: str = "dagster/", client: ClientFactory = Keybrake, **fields: Any) -> Any:
    """A Dagster resource holding the run's ``VaultKey``, minted when the run starts and revoked when it ends::

        keybrake_stripe = keybrake.dagster_resource(vendor="stripe", expires_in="4h",
                                                    allowed_endpoints=["POST /v1/payment_intents"])
        defs = Definitions(assets=[charged_customer],
                           resources={"keybrake": keybrake_stripe.configured({"daily_usd_cap": 300})})
    """
    from dagster import resource

    @resource(config_schema=None)
    def keybrake_vault_key(init_context: Any) -> Iterator[VaultKey]:
        yield from dagster_vault_key(init_context, label_prefix=label_prefix, client=client, **fields)

    return keybrake_vault_key


def celery_vault_key(*, label: Union[str, Callable[..., str]], client: ClientFactory = Keybrake,
                     **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For a bound Celery task (``bind=True``): a fresh key for every try, passed as ``vault_key``, revoked
    when the try ends; the key's ``idempotency_key(*parts)`` is stable across tries (the task's name and id)
    so a retry is de-duplicated by the vendor although its vault key is new. ``label``: a format string of the
    task's keyword arguments (``"celery-billing-{order_id}"``) or a function of them::

        @app.task(bind=True, max_retries=3)
        @keybrake.celery_vault_key(label="celery-billing-{order_id}", vendor="stripe", daily_usd_cap=50,
                                   allowed_endpoints=["/v1/payment_intents"], expires_in="30m")
        def bill_order(self, *, order_id, amount_cents, vault_key):
            ...

    A Keybrake refusal raised by the task's vendor SDK comes out typed (``CapExhausted``: do not retry;
    ``e.retryable`` says which may succeed later).
    """

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            name = label(**kwargs) if callable(label) else label.format(**kwargs)
            scope = f"{self.name}-{self.request.id}"
            with client().vault_key(label=name, scope=scope, **fields) as key, translated():
                return task(self, *args, vault_key=key, **kwargs)

        return run

    return decorate


def flask_vault_keys(app: Any, *, label: Callable[[Any], str], skip: Tuple[str, ...] = ("/health", "/metrics"),
                     client: ClientFactory = Keybrake, **fields: Any) -> None:
    """A key per request in ``flask.g.vault_key``: minted in ``before_request`` (``label(request)`` names it),
    revoked in ``teardown_request`` whether the view returned or raised. Paths in ``skip`` get none::

        keybrake.flask_vault_keys(app, vendor="stripe", daily_usd_cap=1000, expires_in="5m",
                                  allowed_endpoints=["/v1/payment_intents", "/v1/payment_intents/*"],
                                  label=lambda r: f"flask-{r.headers.get('X-User-Id', 'anonymous')}-"
                                                  f"{r.headers.get('X-Agent-Run-Id', 'unknown')}")
    """
    from flask import g, request

    kb = client()

    @app.before_request
    def _mint_vault_key() -> None:
        if request.path in skip:
            return
        g.vault_key = kb.mint(label=label(request), **fields)

    @app.teardown_request
    def _revoke_vault_key(_exc: Optional[BaseException]) -> None:
        key = g.pop("vault_key", None)
        if key is not None:
            kb._revoke_quietly(key)


# ----------------------------------------------------------------------------------------------------------
# python -m keybrake: a shell step (Kestra, Argo)
# ----------------------------------------------------------------------------------------------------------


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keybrake",
        description="Keybrake from a shell step. KEYBRAKE_URL and KEYBRAKE_TOKEN (or KEYBRAKE_API_KEY) say where "
        "and with which token.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="mint a vault key and print it (only it, for $(...) or a file)")
    mint.add_argument("--vendor", required=True)
    mint.add_argument("--daily-usd-cap", type=float)
    mint.add_argument("--total-usd-cap", type=float)
    mint.add_argument("--allow", action="append", required=True, dest="allowed_endpoints",
                      help='an allowed endpoint, repeatable: "POST /v1/payment_intents"')
    mint.add_argument("--expires-in", default="1h")
    mint.add_argument("--label")
    mint.add_argument("--mode", choices=["live", "test"])
    mint.add_argument("--budget-id")
    mint.add_argument("--require-idempotency-key", action="store_true", default=None)
    mint.add_argument("--enforcement", choices=["enforce", "observe"])
    mint.add_argument("--format", choices=["key", "json", "kestra"], default="key",
                      help="key: the vault key alone; json: the whole record; kestra: a ::{outputs}:: line "
                      "(outputs vault_key and vault_key_id)")
    revoke = commands.add_parser("revoke", help="revoke a key by id, or a run family by --label-prefix")
    revoke.add_argument("id", nargs="?")
    revoke.add_argument("--label-prefix")
    spend = commands.add_parser("spend", help="a key's spend and what it has left, as JSON")
    spend.add_argument("id")
    args = parser.parse_args(argv)
    kb = Keybrake()
    try:
        if args.command == "mint":
            key = kb.mint(args.vendor, allowed_endpoints=args.allowed_endpoints, daily_usd_cap=args.daily_usd_cap,
                          total_usd_cap=args.total_usd_cap, label=args.label, expires_in=args.expires_in,
                          mode=args.mode, budget_id=args.budget_id,
                          require_idempotency_key=args.require_idempotency_key, enforcement=args.enforcement)
            if args.format == "json":
                print(json.dumps(key.record, indent=2))
            elif args.format == "kestra":
                print("::" + json.dumps({"outputs": {"vault_key": key.secret, "vault_key_id": key.id}}) + "::")
            else:
                print(key.secret)
        elif args.command == "revoke":
            if (args.id is None) == (args.label_prefix is None):
                parser.error("revoke: give a key id or --label-prefix")
            if args.id:
                kb.revoke(args.id)
                print(f"revoked {args.id}")
            else:
                revoked = kb.revoke_prefix(args.label_prefix)
                print(f"revoked {revoked} key(s)")
                # A kill switch that matched nothing must not look like one that worked.
                return 0 if revoked else 1
        else:
            print(json.dumps(kb.spend(args.id), indent=2))
    except KeybrakeError as error:
        print(f"keybrake: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
