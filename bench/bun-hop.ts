/**
 * The stack's floor: a Bun server that forwards each request to the upstream with fetch and answers with what
 * came back, and does nothing else. What any proxy on Bun pays for its hop before Keybrake's checks and ledger.
 * Usage: bun bench/bun-hop.ts <port> <upstream port>
 */
const upstream = `http://127.0.0.1:${process.argv[3]}`;
Bun.serve({
  port: Number(process.argv[2]),
  hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    const res = await fetch(upstream + url.pathname + url.search, {
      method: req.method,
      headers: req.headers,
      body: await req.arrayBuffer(),
    });
    return new Response(await res.arrayBuffer(), { status: res.status, headers: res.headers });
  },
});
