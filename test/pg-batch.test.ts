import { expect, test } from "bun:test";
import { PgBatch } from "../src/store/pg/batch";
import type { Pg } from "../src/store/pg/client";

/**
 * The group commit when no connection can be had (PostgreSQL down): the group is tried again whole, then refused
 * whole. Tried op by op instead, each refusal waited out every other op's attempts and sleeps: an outage's 503s
 * came one at a time, slower the more callers there were.
 */
test("a server that cannot be reached: the whole group is refused after three tries, not each op after three of its own", async () => {
  const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ERR_POSTGRES_CONNECTION_CLOSED" });
  let reserves = 0;
  const down = {
    reserve: () => {
      reserves++;
      return Promise.reject(refused);
    },
  } as unknown as Pg;
  const batch = new PgBatch(down);
  let ran = 0;
  const ops = Array.from({ length: 10 }, (_, i) =>
    batch
      .submit(`key_${i}`, async () => {
        ran++;
      })
      .then(
        () => "committed",
        (error: unknown) => error,
      ),
  );
  const started = performance.now();
  const outcomes = await Promise.all(ops);
  expect(outcomes).toEqual(Array(10).fill(refused));
  expect(ran).toBe(0);
  expect(reserves).toBe(3);
  // The two sleeps between tries (50 + 100 ms), not ten ops' worth of them.
  expect(performance.now() - started).toBeLessThan(1_000);
});
