import { Elysia } from "elysia";
// Imported as text so `bun build --compile` embeds it: a container step fetches the client from the Keybrake it
// talks to, which is then the very version that Keybrake speaks.
import pythonClient from "../../clients/python/keybrake.py" with { type: "text" };
import { PUBLIC_ROUTE } from "../auth/admin-auth";

/** GET /clients/python/keybrake.py (SPEC §17): the Python client, one standard-library module, public like /docs. */
export const clientRoutes = () =>
  new Elysia({ name: "clients" }).get(
    "/clients/python/keybrake.py",
    () => new Response(pythonClient, { headers: { "content-type": "text/x-python; charset=utf-8", "cache-control": "no-cache" } }),
    {
      detail: {
        summary: "The Python client (keybrake.py)",
        tags: ["Jobs"],
        description:
          'Keybrake\'s Python client, one module of the standard library only (Python >= 3.9): `curl -fsO "$KEYBRAKE_URL/clients/python/keybrake.py"` in a job\'s container, then `python -m keybrake mint …` or `import keybrake` (README "Jobs: the Python client").\n\nRoles: none (no token needed).',
        ...PUBLIC_ROUTE,
      },
    },
  );
