import { WEBHOOK_EXAMPLES } from "../alerts/model";
import { CREATE_BUDGET_EXAMPLES, PATCH_BUDGET_EXAMPLES } from "../budgets/model";
import { BULK_REVOKE_EXAMPLES, CREATE_KEY_EXAMPLES } from "../keys/model";

// biome-ignore lint/suspicious/noExplicitAny: an OpenAPI document is untyped JSON here.
export type OpenApiDocument = { paths?: Record<string, Record<string, any>> };

type Examples = Record<string, { summary: string; value: unknown }>;

/** Named request examples (Swagger UI's "Examples" menu; the first fills Try it out) by path and method. */
const REQUEST_EXAMPLES: Record<string, Record<string, Examples>> = {
  "/vault/keys": { post: CREATE_KEY_EXAMPLES },
  "/v1/keys": { post: { flask: CREATE_KEY_EXAMPLES.flask, airflow: CREATE_KEY_EXAMPLES.airflow } },
  "/vault/keys/revoke": { post: BULK_REVOKE_EXAMPLES },
  "/vault/keys/{id}": {
    patch: {
      raise: { summary: "Raise the daily cap and extend the key by 2 hours", value: { daily_usd_cap: 750, expires_in: "2h" } },
      unlimit: { summary: "Remove the rate limit", value: { max_requests_per_minute: null } },
    },
  },
  "/budgets": { post: CREATE_BUDGET_EXAMPLES },
  "/budgets/{id}": { patch: PATCH_BUDGET_EXAMPLES },
  "/alerts/webhooks": { post: WEBHOOK_EXAMPLES },
  "/vault/holds/{id}/settle": {
    post: {
      at_cost: { summary: "The vendor's dashboard shows 12.50 USD was charged", value: { cost_usd: 12.5 } },
      at_hold: { summary: "Count the whole hold as spent", value: {} },
    },
  },
};

const METRICS_SAMPLE = `# HELP keybrake_requests_total Proxied requests by vendor and decision (allowed or the denial code).
# TYPE keybrake_requests_total counter
keybrake_requests_total{vendor="stripe",decision="allowed"} 1024
keybrake_requests_total{vendor="stripe",decision="cap_exhausted"} 3
# HELP keybrake_spend_usd_total Spend counted through this process, in USD; corrections are in keybrake_spend_corrected_usd_total.
# TYPE keybrake_spend_usd_total counter
keybrake_spend_usd_total{vendor="stripe"} 2970.5
# HELP keybrake_open_holds Holds not yet settled (in flight, or orphaned by a crash).
# TYPE keybrake_open_holds gauge
keybrake_open_holds 0
`;

const enriched = new WeakSet<object>();

/**
 * Completes the generated document (once per document object; the plugin caches it): each parameter carries
 * its schema's description (Swagger UI shows a parameter's own), request bodies their named examples, and
 * /metrics its Prometheus text. Parameters get no `example`: Swagger UI would fill it in and filter Try it out.
 */
export function enrichDocument(doc: OpenApiDocument) {
  if (typeof doc !== "object" || doc === null || enriched.has(doc)) return;
  enriched.add(doc);
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, operation] of Object.entries(item)) {
      for (const parameter of operation.parameters ?? []) {
        if (parameter.description === undefined && parameter.schema?.description) parameter.description = parameter.schema.description;
      }
      const examples = REQUEST_EXAMPLES[path]?.[method];
      const json = operation.requestBody?.content?.["application/json"];
      if (examples && json) json.examples = examples;
    }
  }
  const metrics = doc.paths?.["/metrics"]?.get;
  if (metrics) {
    metrics.responses = {
      ...metrics.responses,
      200: {
        description: "Prometheus text format 0.0.4: counters by vendor and decision, spend, latency histograms, open holds",
        content: { "text/plain; version=0.0.4": { schema: { type: "string" }, example: METRICS_SAMPLE } },
      },
    };
  }
}
