import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { auditViewOf } from "../tokens/scope";
import { AuditQuery, ExportQuery, SpendQuery } from "./model";
import { AuditHead, AuditPage, SpendPage } from "./responses";
import { auditHead, exportStream, listAudit, spendBy } from "./service";

const ALL = ["admin", "issuer", "viewer"] as const;
const OWN_KEYS = "only the calls of the keys it minted";

/** SPEC §8: the per-call audit trail, per-run spend and the streamed export (an issuer's: its keys' only). */
export const auditRoutes = (store: Store, auth: Authenticator) =>
  new Elysia({ name: "audit", prefix: "/audit", seed: store })
    .use(accessGuard(auth))
    .get("", ({ query, caller }) => listAudit(auditViewOf(store, caller), query), {
      query: AuditQuery,
      ...routeDoc({
        summary: "Proxied calls, allowed and denied, newest first",
        tags: ["Audit"],
        ok: [200, AuditPage, "A page of audit rows; pass next_cursor as cursor for the next"],
        errors: [400],
        access: ALL,
        issuer: OWN_KEYS,
      }),
    })
    .get("/head", () => auditHead(store), {
      ...routeDoc({
        summary: "The head of the audit's hash chain (one per instance on PostgreSQL), to keep outside Keybrake",
        tags: ["Audit"],
        ok: [200, AuditHead, "Each chain's newest row: its seq and hash (`keybrake audit verify --head <hash>` checks it)"],
        access: ["admin", "viewer"],
      }),
    })
    .get(
      "/spend",
      ({ query, caller }) => {
        const { group_by, ...filters } = query;
        return spendBy(auditViewOf(store, caller), group_by, filters);
      },
      {
        query: SpendQuery,
        ...routeDoc({
          summary: "Spend per run label, key, vendor or UTC day (sums equal the ledger to the micro-dollar)",
          tags: ["Audit"],
          ok: [200, SpendPage, "One row per group"],
          errors: [400],
          access: ALL,
          issuer: OWN_KEYS,
        }),
      },
    )
    .get(
      "/export",
      ({ query, caller }) => {
        const { format, ...filters } = query;
        return new Response(exportStream(auditViewOf(store, caller), filters, format), {
          headers: {
            "content-type": format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson",
            "content-disposition": `attachment; filename="keybrake-audit.${format === "csv" ? "csv" : "ndjson"}"`,
          },
        });
      },
      {
        query: ExportQuery,
        ...routeDoc({
          summary: "Every matching audit row, streamed as NDJSON or CSV",
          tags: ["Audit"],
          ok: [200, z.string(), "NDJSON (one row per line) or CSV with a header line"],
          errors: [400],
          access: ALL,
          issuer: OWN_KEYS,
        }),
      },
    );
