/**
 * The streaming bench's upstream: a fast Bun server answering a chat completion as OpenAI streams one, after
 * `first token` ms, then 8 content chunks 2 ms apart, the usage, `data: [DONE]`.
 * Usage: bun bench/llm-upstream.ts <port> [first token ms]   (prints "ready <port>")
 */
const FIRST_TOKEN_MS = Number(process.argv[3] ?? 20);
const encoder = new TextEncoder();
const chunk = (data: unknown) => encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);

let n = 0;
const server = Bun.serve({
  port: Number(process.argv[2] ?? 0),
  hostname: "127.0.0.1",
  async fetch(req) {
    if (req.method !== "POST") return new Response("ready");
    const { model } = (await req.json()) as { model: string };
    const id = `chatcmpl-bench${++n}`;
    const delta = (content: string) => chunk({ id, object: "chat.completion.chunk", model, choices: [{ index: 0, delta: { content } }] });
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        await Bun.sleep(FIRST_TOKEN_MS);
        for (let i = 0; i < 8; i++) {
          if (i > 0) await Bun.sleep(2);
          controller.enqueue(delta(`token ${i} `));
        }
        controller.enqueue(
          chunk({
            id,
            object: "chat.completion.chunk",
            model,
            choices: [],
            usage: { prompt_tokens: 40, completion_tokens: 8, total_tokens: 48 },
          }),
        );
        controller.enqueue(chunk("[DONE]"));
        controller.close();
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream", "x-request-id": `req_bench${n}` } });
  },
});
console.log(`ready ${server.port}`);
