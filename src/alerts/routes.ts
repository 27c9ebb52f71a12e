import { Elysia } from "elysia";
import type { Config } from "../config";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { CreateWebhookBody, DeliveriesQuery, EventsQuery, WebhookId } from "./model";
import { AlertEventPage, CreatedWebhookSchema, DeliveryPage, TestResultSchema, WebhookList, WebhookSchema } from "./responses";
import * as service from "./service";

const tags = ["Alerts"];
const ADMIN = ["admin"] as const;

/** SPEC §12: webhook destinations, the state of their deliveries, and recent events. Admin only. */
export function alertRoutes(store: Store, auth: Authenticator, now: () => number, config: Pick<Config, "publicUrl">) {
  const ctx = (caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });
  return new Elysia({ name: "alerts", prefix: "/alerts", seed: store })
    .use(accessGuard(auth))
    .post(
      "/webhooks",
      ({ body, caller, set }) => {
        set.status = 201;
        return service.createWebhook(ctx(caller), body);
      },
      {
        body: CreateWebhookBody,
        parse: "json",
        ...routeDoc({
          summary: "Add a webhook for alert events (its signing secret is in this answer only)",
          tags,
          ok: [201, CreatedWebhookSchema, "The webhook with its signing secret, shown this once"],
          errors: [400],
          access: ADMIN,
        }),
      },
    )
    .get("/webhooks", () => service.listWebhooks({ store }), {
      ...routeDoc({
        summary: "The webhooks (never their secrets)",
        tags,
        ok: [200, WebhookList, "Every webhook not deleted, oldest first"],
        access: ADMIN,
      }),
    })
    .delete("/webhooks/:id", ({ params, caller }) => service.deleteWebhook(ctx(caller), params.id), {
      params: WebhookId,
      ...routeDoc({
        summary: "Delete a webhook; its pending deliveries are cancelled",
        tags,
        ok: [200, WebhookSchema, "The deleted webhook"],
        errors: [404],
        access: ADMIN,
      }),
    })
    .post("/webhooks/:id/test", ({ params }) => service.testWebhook({ store, now }, params.id, config), {
      params: WebhookId,
      ...routeDoc({
        summary: "Send a signed test event to a webhook now and show what it answered",
        tags,
        ok: [200, TestResultSchema, "Whether the receiver answered 2xx (within 5 s), its status, or why not"],
        errors: [404],
        access: ADMIN,
      }),
    })
    .get("/deliveries", ({ query }) => service.listDeliveries({ store }, query), {
      query: DeliveriesQuery,
      ...routeDoc({
        summary: "Recent deliveries: status, attempts, last error",
        tags,
        ok: [200, DeliveryPage, "A page of deliveries, newest first"],
        errors: [400],
        access: ADMIN,
      }),
    })
    .get("/events", ({ query }) => service.listEvents({ store }, query, config.publicUrl), {
      query: EventsQuery,
      ...routeDoc({
        summary: "Recent alert events, as a JSON webhook receives them",
        tags,
        ok: [200, AlertEventPage, "A page of events, newest first"],
        errors: [400],
        access: ADMIN,
      }),
    });
}
