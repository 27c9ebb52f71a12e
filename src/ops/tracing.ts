import type { Context, Span, Tracer } from "@opentelemetry/api";
import type { Sampler } from "@opentelemetry/sdk-trace";
import type { AuditRow, HoldRequest, SettleRequest, Store } from "../store/index";
import { VERSION } from "../version";
import type { Logger } from "./log";

/**
 * OpenTelemetry (SPEC §19): with an OTLP endpoint configured by the standard `OTEL_*` variables, one trace span
 * per proxied call, `keybrake.proxy`, with children `keybrake.preflight`, `keybrake.hold`, `keybrake.upstream`
 * and `keybrake.settle`; vendor, key, label, decision, price and cost as attributes. A job's W3C `traceparent`
 * is continued, and the vendor receives one naming the upstream span in the job's trace.
 *
 * Off by default, and then nothing of the SDK is loaded: it is imported only once tracing is on (`startTracing`),
 * so the binary starts as fast as without it. Exported as OTLP/HTTP JSON (`@opentelemetry/exporter-trace-otlp-http`).
 */

/** A stage of a call, traced as a child span of its `keybrake.proxy`. */
export type Stage = "preflight" | "hold" | "upstream" | "settle";

/** What the proxy pipeline asks of tracing; each call is known by its request id (`kbr_…`, its audit row's id). */
export interface Tracing {
  /** Starts the call's span, the child of the job's `traceparent` when it sends a valid one. */
  startCall(requestId: string, request: Request): void;
  /**
   * Runs `work` in a child span of the call's. `headers`: the request to the vendor that the stage sends, which
   * then carries a `traceparent` naming this span (in the job's trace).
   */
  stage<T>(requestId: string, stage: Stage, work: () => Promise<T>, headers?: Headers): Promise<T>;
  /** Sets what the call is priced at on its span (its hold asks for it, admitted or refused). */
  price(requestId: string, micros: number): void;
  /**
   * Ends the call's span once its settlement is written, with the row as written (or, when the settlement fails, as
   * answered; when the call itself fails, with the error alone).
   */
  finish(requestId: string, call: Promise<{ row: AuditRow; settled: Promise<AuditRow> }>): void;
  /** Exports what is still buffered, then stops. */
  shutdown(): Promise<void>;
}

/** Whether the `OTEL_*` variables ask for traces (OTLP export configured, SDK not disabled). */
export function tracingRequested(env: Record<string, string | undefined>): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? "").split(",").map((e) => e.trim().toLowerCase());
  if (exporters.includes("none")) return false;
  return exporters.includes("otlp") || Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

const usd = (micros: number) => micros / 1e6;

/** OTel attributes take no null: what is unknown is left out. */
function attributes(values: Record<string, string | number | null | undefined>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [name, value] of Object.entries(values)) if (value !== null && value !== undefined) out[name] = value;
  return out;
}

/** The call's attributes from its audit row: the vendor, key, label, decision, status and cost. */
const callAttributes = (row: AuditRow) =>
  attributes({
    "keybrake.vendor": row.vendor,
    "keybrake.key_id": row.keyId,
    "keybrake.label": row.label,
    "keybrake.decision": row.decision,
    "keybrake.cost.usd": usd(row.costMicros),
    "keybrake.hold.usd": usd(row.holdMicros),
    "http.response.status_code": row.status,
  });

/** Starts tracing when the `OTEL_*` variables ask for it (null otherwise), loading the SDK then and only then. */
export async function startTracing(env: Record<string, string | undefined>, log: Logger): Promise<Tracing | null> {
  if (!tracingRequested(env)) return null;
  const [api, core, sdk, resources, { OTLPTraceExporter }] = await Promise.all([
    import("@opentelemetry/api"),
    import("@opentelemetry/core"),
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/exporter-trace-otlp-http"),
  ]);
  const ratio = core.getNumberFromEnv("OTEL_TRACES_SAMPLER_ARG") ?? 1;
  const samplers: Record<string, () => Sampler> = {
    always_on: () => new sdk.AlwaysOnSampler(),
    always_off: () => new sdk.AlwaysOffSampler(),
    traceidratio: () => new sdk.TraceIdRatioBasedSampler(ratio),
    parentbased_always_on: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() }),
    parentbased_always_off: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() }),
    parentbased_traceidratio: () => new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(ratio) }),
  };
  const samplerName = (core.getStringFromEnv("OTEL_TRACES_SAMPLER") ?? "parentbased_always_on").toLowerCase();
  const sampler = (samplers[samplerName] ?? samplers.parentbased_always_on!)();
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over Keybrake's defaults.
  const resource = resources
    .resourceFromAttributes({ "service.name": "keybrake", "service.version": VERSION })
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const exporter = new OTLPTraceExporter();
  const provider = new sdk.TracerProvider({
    resource,
    sampler,
    spanProcessors: [
      // The SDK reads no OTEL_BSP_* itself: the standard variables, read here.
      new sdk.BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: core.getNumberFromEnv("OTEL_BSP_SCHEDULE_DELAY"),
        exportTimeoutMillis: core.getNumberFromEnv("OTEL_BSP_EXPORT_TIMEOUT"),
        maxQueueSize: core.getNumberFromEnv("OTEL_BSP_MAX_QUEUE_SIZE"),
        maxExportBatchSize: core.getNumberFromEnv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
      }),
    ],
  });
  const tracer: Tracer = provider.getTracer("keybrake", VERSION);
  const propagator = new core.W3CTraceContextPropagator();
  const fromHeaders = { get: (h: Headers, key: string) => h.get(key) ?? undefined, keys: (h: Headers) => [...h.keys()] };
  const toHeaders = { set: (h: Headers, key: string, value: string) => h.set(key, value) };
  /** Calls in progress: their span, and the context their stages start in. */
  const calls = new Map<string, { span: Span; context: Context }>();
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT ?? "http://localhost:4318";
  log.info("tracing", `tracing: one span per proxied call, exported as OTLP/HTTP JSON to ${endpoint} (sampler ${samplerName})`, {
    endpoint,
    sampler: samplerName,
  });

  return {
    startCall(requestId, request) {
      const parent = propagator.extract(api.ROOT_CONTEXT, request.headers, fromHeaders);
      const url = new URL(request.url);
      const span = tracer.startSpan(
        "keybrake.proxy",
        {
          kind: api.SpanKind.SERVER,
          attributes: { "keybrake.request_id": requestId, "http.request.method": request.method, "url.path": url.pathname },
        },
        parent,
      );
      calls.set(requestId, { span, context: api.trace.setSpan(parent, span) });
    },

    async stage(requestId, stage, work, headers) {
      const call = calls.get(requestId);
      if (!call) return work();
      const kind = stage === "preflight" || stage === "upstream" ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL;
      const span = tracer.startSpan(`keybrake.${stage}`, { kind }, call.context);
      if (headers) propagator.inject(api.trace.setSpan(call.context, span), headers, toHeaders);
      try {
        return await work();
      } catch (error) {
        span.setStatus({ code: api.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        throw error;
      } finally {
        span.end();
      }
    },

    price(requestId, micros) {
      calls.get(requestId)?.span.setAttribute("keybrake.price.usd", usd(micros));
    },

    finish(requestId, answered) {
      const end = (row: AuditRow | null, error?: unknown) => {
        const call = calls.get(requestId);
        if (!call) return;
        calls.delete(requestId);
        if (row) call.span.setAttributes(callAttributes(row));
        if (error !== undefined || (row && row.status >= 500)) {
          call.span.setStatus({
            code: api.SpanStatusCode.ERROR,
            message: error instanceof Error ? error.message : `status ${row?.status}`,
          });
        }
        call.span.end();
      };
      answered.then(
        ({ row, settled }) =>
          settled.then(
            (written) => end(written),
            (error) => end(row, error),
          ),
        (error) => end(null, error),
      );
    },

    async shutdown() {
      await provider.shutdown();
    },
  };
}

/**
 * The call path's store, its holds and settlements traced as the `keybrake.hold` and `keybrake.settle` stages of
 * the call they are for (by request id): the pipeline's own code is left as it is.
 */
export function tracedStore(store: Store, tracing: Tracing): Store {
  return {
    ...store,
    holdSpend: (req: HoldRequest) => {
      tracing.price(req.call.requestId, req.micros);
      return tracing.stage(req.call.requestId, "hold", () => store.holdSpend(req));
    },
    settleCall: (req: SettleRequest) => tracing.stage(req.audit.id, "settle", () => store.settleCall(req)),
  };
}
