/**
 * The benchmark's upstream: a fast Bun server answering like Stripe's PaymentIntent create, with a Request-Id.
 * Usage: bun bench/upstream.ts <port>   (prints "ready <port>")
 */
let n = 0;
const server = Bun.serve({
  port: Number(process.argv[2] ?? 0),
  hostname: "127.0.0.1",
  async fetch(req) {
    await req.arrayBuffer();
    n++;
    const id = `pi_bench${n.toString(36).padStart(10, "0")}`;
    return new Response(
      `{"id":"${id}","object":"payment_intent","amount":100,"currency":"usd","status":"requires_payment_method","amount_received":0}`,
      { headers: { "content-type": "application/json", "request-id": `req_bench${n}` } },
    );
  },
});
console.log(`ready ${server.port}`);
