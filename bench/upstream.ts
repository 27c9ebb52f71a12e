/**
 * The benchmark's upstream: a fast Bun server answering like Stripe's PaymentIntent create (the requested
 * amount), with a Request-Id.
 * Usage: bun bench/upstream.ts <port>   (prints "ready <port>")
 */
let n = 0;
const server = Bun.serve({
  port: Number(process.argv[2] ?? 0),
  hostname: "127.0.0.1",
  async fetch(req) {
    // Stripe states the amount it was asked for, and Keybrake settles at what Stripe states: echo it.
    const form = new URLSearchParams(await req.text());
    const amount = Number(form.get("amount") ?? 0);
    const currency = form.get("currency") ?? "usd";
    n++;
    const id = `pi_bench${n.toString(36).padStart(10, "0")}`;
    return new Response(
      `{"id":"${id}","object":"payment_intent","amount":${amount},"currency":"${currency}","status":"requires_payment_method","amount_received":0}`,
      { headers: { "content-type": "application/json", "request-id": `req_bench${n}` } },
    );
  },
});
console.log(`ready ${server.port}`);
