import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
// Imported as text so `bun build --compile` embeds them: /docs works with no internet.
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import { VERSION } from "../version";
import { PUBLIC_ROUTE } from "../auth/admin-auth";
import { enrichDocument, type OpenApiDocument } from "./examples";
import { documentSchema } from "../ops/openapi";

const ASSETS = "/docs/assets";
const cacheable = (type: string) => ({ "content-type": type, "cache-control": "public, max-age=86400" });

/** The operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS, said in the docs: what is forwarded at $0 unknown to the catalogue. */
function freeEndpointsText(freeEndpoints: Record<string, string[]>): string {
  const widened = Object.entries(freeEndpoints).filter(([, patterns]) => patterns.length > 0);
  if (widened.length === 0) return "";
  const list = widened.map(([vendor, patterns]) => `${vendor}: ${patterns.map((p) => `\`${p}\``).join(", ")}`).join("; ");
  return ` **Forwarded at $0 although the vendors' catalogues do not know them** (the operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS): ${list}.`;
}

/**
 * Swagger UI at /docs, OpenAPI 3 at /docs/json, the UI's JS and CSS from inside the binary. `freeEndpoints`: the
 * operator's widening of each vendor's catalogue, listed in the document's description.
 */
export const docsRoutes = (freeEndpoints: Record<string, string[]> = {}) =>
  new Elysia({ name: "docs" })
    // The page loads its document from the relative "docs/json": from /docs/ that would be /docs/docs/json.
    // Every request passes here, proxied calls included: one comparison unless the URL ends so.
    .onRequest(({ request }) => {
      const url = request.url;
      if (url.endsWith("/docs/") && url.slice(url.indexOf("/", url.indexOf("//") + 2)) === "/docs/") {
        return new Response(null, { status: 308, headers: { location: "../docs" } });
      }
    })
    // What the routes' schemas cannot say: named request examples, parameter descriptions, /metrics as text.
    .onAfterHandle(({ request, response }) => {
      if (request.url.endsWith("/docs/json") || request.url.endsWith("/docs/json/")) enrichDocument(response as OpenApiDocument);
    })
    .get(`${ASSETS}/swagger-ui-bundle.js`, () => new Response(swaggerBundle, { headers: cacheable("text/javascript; charset=utf-8") }), {
      detail: { hide: true, ...PUBLIC_ROUTE },
    })
    .get(`${ASSETS}/swagger-ui.css`, () => new Response(swaggerCss, { headers: cacheable("text/css; charset=utf-8") }), {
      detail: { hide: true, ...PUBLIC_ROUTE },
    })
    .use(
      openapi({
        path: "/docs",
        specPath: "/docs/json",
        provider: "swagger-ui",
        // The routes' own zod schemas (body, query, params, response) become the document: nothing is described twice.
        mapJsonSchema: { zod: documentSchema },
        swagger: {
          cdn: `${ASSETS}/swagger-ui-bundle.js`,
          theme: `${ASSETS}/swagger-ui.css`,
          autoDarkMode: false,
          // The token pasted into Authorize lives in the page only: kept in localStorage it would outlive the tab
          // and be readable by any script of this origin (the dashboard keeps its session HttpOnly for that reason).
          persistAuthorization: false,
        },
        documentation: {
          info: {
            title: "Keybrake",
            version: VERSION,
            description:
              "Self-hosted spend brake for jobs that call Stripe, Twilio, Resend, OpenAI and Anthropic. Click Authorize and paste a token to issue and revoke vault keys. Each route's description names the roles it needs: `admin` (everything, tokens included), `issuer` (mints keys within its policy; sees, changes and revokes only the keys it minted, and reads only their audit and spend), `viewer` (reads everything, writes nothing)." +
              freeEndpointsText(freeEndpoints),
          },
          components: {
            securitySchemes: {
              adminToken: {
                type: "http",
                scheme: "bearer",
                description:
                  "A Keybrake token: the bootstrap admin token (KEYBRAKE_ADMIN_TOKEN, or the one printed at first start), or an admin, issuer or viewer token from POST /admin/tokens",
              },
            },
          },
        },
      }),
    );
