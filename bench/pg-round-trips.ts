/**
 * How many round trips a hold takes on PostgreSQL (#30's design target: one), counted on the wire. The store
 * talks to the server through a relay that counts, per connection, each time the client speaks again after the
 * server has answered: pipelined statements sent together count once, as they cost one wait. Holds are taken one
 * at a time on one key (no budget, as the bench's PostgreSQL keys), after a few that warm the store's caches up.
 *
 * `bun run bench` calls countHoldRoundTrips on its PostgreSQL database; alone: `bun bench/pg-round-trips.ts <url>`.
 */
import type { Socket } from "bun";
import { openPgStore } from "../src/store/pg/index";
import { insertBenchKey } from "./ledger";

const WARM_UP = 20;

/** A TCP relay to `target` that counts the client's turns: sends that follow an answer (or open a connection). */
function countingRelay(target: { hostname: string; port: number }) {
  let turns = 0;
  interface Link {
    server: Socket<unknown> | null;
    /** Client bytes that arrived before the server connection opened. */
    early: Buffer[];
    serverAnswered: boolean;
  }
  const listener = Bun.listen<Link>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        client.data = { server: null, early: [], serverAnswered: true };
        void Bun.connect({
          ...target,
          socket: {
            open(server) {
              client.data.server = server;
              for (const chunk of client.data.early) server.write(chunk);
            },
            data(_server, chunk) {
              client.data.serverAnswered = true;
              client.write(chunk);
            },
            close() {
              client.end();
            },
          },
        });
      },
      data(client, chunk) {
        if (client.data.serverAnswered) turns++;
        client.data.serverAnswered = false;
        if (client.data.server) client.data.server.write(chunk);
        else client.data.early.push(Buffer.from(chunk));
      },
      close(client) {
        client.data.server?.end();
      },
    },
  });
  return {
    port: listener.port,
    /** The turns counted since the last call. */
    take: () => {
      const n = turns;
      turns = 0;
      return n;
    },
    stop: () => listener.stop(true),
  };
}

/** Round trips per hold, the mean over `holds` holds taken one at a time, on the database at `url`. */
export async function countHoldRoundTrips(url: string, holds = 200): Promise<number> {
  const server = new URL(url);
  const relay = countingRelay({ hostname: server.hostname, port: Number(server.port || 5432) });
  const relayed = new URL(url);
  relayed.hostname = "127.0.0.1";
  relayed.port = String(relay.port);
  const store = await openPgStore(relayed.toString(), { instanceId: "bench-round-trips" });
  try {
    const now = Date.now();
    const keyId = `vk_round_trips_${now}`;
    await insertBenchKey(store, keyId, "bench/round-trips", now);
    const day = new Date(now).toISOString().slice(0, 10);
    const hold = (i: number) =>
      store.holdSpend({
        holdId: `hold_round_trips_${now}_${i}`,
        keyId,
        day,
        micros: 1_000_000,
        ledger: true,
        reuseAmbiguous: true,
        now,
        call: { requestId: `kbr_round_trips_${now}_${i}`, method: "POST", path: "/v1/payment_intents" },
      });
    for (let i = 0; i < WARM_UP; i++) await hold(i);
    relay.take();
    for (let i = WARM_UP; i < WARM_UP + holds; i++) await hold(i);
    return relay.take() / holds;
  } finally {
    await store.close();
    relay.stop();
  }
}

if (import.meta.main) {
  const url = process.argv[2];
  if (!url) throw new Error("usage: bun bench/pg-round-trips.ts <postgres url>");
  console.log(`round trips per hold: ${(await countHoldRoundTrips(url)).toFixed(2)}`);
}
