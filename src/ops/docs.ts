import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
// Imported as text so `bun build --compile` embeds them: /docs works with no internet.
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import { VERSION } from "../version";
import { documentSchema } from "./openapi";

const ASSETS = "/docs/assets";
const cacheable = (type: string) => ({ "content-type": type, "cache-control": "public, max-age=86400" });

/** Swagger UI at /docs, OpenAPI 3 at /docs/json, the UI's JS and CSS from inside the binary. */
export const docsRoutes = () =>
  new Elysia({ name: "docs" })
    .get(`${ASSETS}/swagger-ui-bundle.js`, () => new Response(swaggerBundle, { headers: cacheable("text/javascript; charset=utf-8") }), {
      detail: { hide: true },
    })
    .get(`${ASSETS}/swagger-ui.css`, () => new Response(swaggerCss, { headers: cacheable("text/css; charset=utf-8") }), {
      detail: { hide: true },
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
          persistAuthorization: true,
        },
        documentation: {
          info: {
            title: "Keybrake",
            version: VERSION,
            description:
              "Self-hosted spend brake for jobs that call Stripe, Twilio and Resend. Click Authorize and paste the admin token to issue and revoke vault keys.",
          },
          components: {
            securitySchemes: {
              adminToken: {
                type: "http",
                scheme: "bearer",
                description: "The admin token (KEYBRAKE_ADMIN_TOKEN, or the one printed at first start)",
              },
            },
          },
        },
      }),
    );
