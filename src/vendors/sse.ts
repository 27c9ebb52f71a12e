/**
 * Server-sent events (the WHATWG `text/event-stream` format) as they pass: bytes in, one callback per event with its
 * name and data. Keybrake reads LLM streams for their final usage while the job receives them unchanged.
 */

/** An event's data beyond this is not kept (the events Keybrake reads, usage and ends, are a few hundred bytes). */
const MAX_EVENT_BYTES = 1 << 20;

export class SseReader {
  private readonly decoder = new TextDecoder();
  /** The part of the last chunk after its last line break: a line not yet complete. */
  private pending = "";
  private event: string | null = null;
  private data: string[] = [];
  private dataBytes = 0;
  /** A CR ended the last chunk: an LF that starts the next one is the same line break. */
  private afterCr = false;

  constructor(private readonly onEvent: (name: string | null, data: string) => void) {}

  push(bytes: Uint8Array) {
    let text = this.pending + this.decoder.decode(bytes, { stream: true });
    if (this.afterCr && text.startsWith("\n")) text = text.slice(1);
    const lines = text.split(/\r\n|\r|\n/);
    // A chunk that ends in a CR may be the first half of a CRLF: the LF is skipped when it comes.
    this.afterCr = text.endsWith("\r");
    this.pending = lines.pop()!;
    for (const line of lines) this.line(line);
  }

  private line(line: string) {
    if (line === "") {
      if (this.data.length > 0 && this.dataBytes <= MAX_EVENT_BYTES) this.onEvent(this.event, this.data.join("\n"));
      this.event = null;
      this.data = [];
      this.dataBytes = 0;
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + (line[colon + 1] === " " ? 2 : 1));
    if (field === "event") this.event = value;
    else if (field === "data") {
      this.dataBytes += value.length;
      if (this.dataBytes <= MAX_EVENT_BYTES) this.data.push(value);
    }
  }
}
