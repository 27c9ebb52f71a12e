import { Elysia } from "elysia";
import { alertRoutes } from "./alerts/routes";
import { adminEventRoutes } from "./audit/admin-events";
import { auditRoutes } from "./audit/routes";
import { budgetRoutes } from "./budgets/routes";
import { clientRoutes } from "./clients/routes";
import type { Config } from "./config";
import { KeybrakeError, errorResponse, invalidRequest, notFound } from "./errors";
import { approvalRoutes } from "./approvals/routes";
import { holdRoutes } from "./holds/routes";
import { keyRoutes } from "./keys/routes";
import { mcpRoutes } from "./mcp/routes";
import { issueWarningsPlugin } from "./keys/warnings";
import { authenticator, withAccessDeclared } from "./auth/admin-auth";
import { docsRoutes } from "./docs/docs";
import { healthRoutes } from "./ops/health";
import { createLogger, type LineSink, logStoreOutage, loggingAdminEvents, messageSink } from "./ops/log";
import { Metrics, metricsRoutes } from "./ops/metrics";
import { type Tracing, tracedStore } from "./ops/tracing";
import { idempotencyDeriver } from "./proxy/idempotency";
import { RateLimiter } from "./proxy/rate-limit";
import { proxyRoutes } from "./proxy/routes";
import { UnauthenticatedDenials } from "./proxy/unauthenticated";
import { isStoreOutage, type RequestLimiter, type SpendCounter, type Store, storeUnavailable } from "./store/index";
import { tokenRoutes } from "./tokens/routes";
import { uiRoutes } from "./ui/routes";
import { Sessions } from "./ui/sessions";
import { invalidInput, issueFields, validationIssues } from "./validation";

export interface AppOptions {
  /** The clock (ms). Tests inject one to cross UTC midnight. */
  now?: () => number;
  /** Where log lines go (stderr by default; tests keep them), formatted per KEYBRAKE_LOG_FORMAT. Never given secrets. */
  log?: LineSink;
  /** The /metrics counters; `serve` shares them with the alert delivery worker. */
  metrics?: Metrics;
  /** Where max_requests_per_minute is counted: in memory by default; the fleet's log on PostgreSQL. */
  rateLimiter?: RequestLimiter;
  /** Answer a proxied call once its settlement is committed (several instances on PostgreSQL); not by default. */
  answerAfterSettlement?: boolean;
  /** The spend the fleet's other instances counted, for /metrics (PostgreSQL); none by default. */
  otherInstancesSpend?: () => Promise<SpendCounter[]>;
  /** OpenTelemetry spans of proxied calls (ops/tracing.ts); off by default. */
  tracing?: Tracing | null;
}

/** The whole HTTP surface, without listening: `serve` listens, tests call `app.handle`. */
export function createApp(config: Config, baseStore: Store, options: AppOptions = {}) {
  const now = options.now ?? Date.now;
  const log = createLogger(config.logFormat, options.log);
  // Revocations and holds resolved by hand are logged as well as recorded.
  const store = loggingAdminEvents(baseStore, log);
  // The dashboard's sessions (in memory): a session cookie authenticates the admin API as its token would.
  const sessions = new Sessions(now, config.publicUrl);
  const auth = authenticator(config, store, now, sessions);
  const metrics = options.metrics ?? new Metrics();
  const unauthenticated = new UnauthenticatedDenials(store, now, messageSink(log, "error", "audit_failed"));
  // The operator's widening of the catalogues, said in the docs and the dashboard (SPEC §2).
  const freeEndpoints = Object.fromEntries(Object.entries(config.freeEndpoints).map(([vendor, free]) => [vendor, free.patterns]));
  // MCP's price_call is answered by the proxy's own routes, as the job's real call would be.
  const handle = (request: Request): Promise<Response> => app.handle(request);
  // Nothing is allowed by default: every route declares the roles it needs, or that it is public.
  const app = withAccessDeclared(
    new Elysia()
      // What is still only counted is written before the store closes (the caller closes it after stop()).
      .onStop(() => unauthenticated.flush())
      .onError({ as: "global" }, ({ code, error }) => {
        if (error instanceof KeybrakeError) return errorResponse(error);
        // The ledger is unreachable or unwritable (SPEC §4, §13): 503 with Retry-After, not a 500 with a stack trace.
        if (isStoreOutage(error)) {
          logStoreOutage(log, error, now());
          return errorResponse(storeUnavailable());
        }
        if (code === "NOT_FOUND") return errorResponse(notFound());
        if (code === "PARSE")
          return errorResponse(invalidRequest("The body is not valid JSON.", [{ path: "body", message: "is not valid JSON" }]));
        if (code === "VALIDATION") {
          // A route's zod schema refused the body, query or path: every offending field, as the CLI names them.
          const issues = validationIssues(error);
          if (error.type !== "response") return errorResponse(invalidInput(error.type, issues));
          // An answer that does not match its own schema is Keybrake's bug, not the caller's.
          log.error(
            "answer_schema",
            `an answer does not match its schema: ${issueFields(issues, "response")
              .map((f) => `${f.path}: ${f.message}`)
              .join("; ")}`,
          );
          return errorResponse(new KeybrakeError("internal_error"));
        }
        log.error("unexpected_error", `unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
        return errorResponse(new KeybrakeError("internal_error"));
      })
      .use(issueWarningsPlugin(config))
      .use(docsRoutes(freeEndpoints))
      .use(healthRoutes(store))
      .use(clientRoutes())
      .use(keyRoutes(store, auth, now))
      .use(budgetRoutes(store, auth, now))
      .use(holdRoutes(store, auth, now))
      .use(approvalRoutes(store, auth, now))
      .use(auditRoutes(store, auth))
      .use(adminEventRoutes(store, auth))
      .use(tokenRoutes(store, auth, now))
      .use(alertRoutes(store, auth, now, config))
      .use(metricsRoutes(metrics, store, auth, config.metricsPublic, options.otherInstancesSpend, now))
      .use(uiRoutes(auth, sessions, now, freeEndpoints))
      .use(mcpRoutes({ store, now, proxy: handle }, auth))
      .use(
        proxyRoutes({
          config,
          store: options.tracing ? tracedStore(store, options.tracing) : store,
          tracing: options.tracing ?? undefined,
          now,
          rateLimiter: options.rateLimiter ?? new RateLimiter(),
          metrics,
          log,
          deriveIdempotencyKey: idempotencyDeriver(store),
          unauthenticated,
          answerAfterSettlement: options.answerAfterSettlement,
        }),
      ),
  );
  return app;
}
