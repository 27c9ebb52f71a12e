/**
 * The race bench: `calls` concurrent priced calls ($29 each) against a daily cap that admits exactly `admit`
 * of them. Correct means admitted == admit and overspend == 0. Used by `bun run bench` and by a test.
 */
export interface RaceResult {
  calls: number;
  expected: number;
  admitted: number;
  capped: number;
  otherStatuses: Record<string, number>;
  spentMicros: number;
  capMicros: number;
  overspendMicros: number;
}

export async function runRace(baseUrl: string, adminToken: string, opts: { calls: number; admit: number }): Promise<RaceResult> {
  const capUsd = opts.admit * 29 + 28.99; // room for `admit` calls and not one more
  const res = await fetch(`${baseUrl}/vault/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({
      vendor: "stripe",
      daily_usd_cap: capUsd,
      allowed_endpoints: ["POST /v1/payment_intents"],
      expires_in: "1h",
      agent_run_label: "bench/race",
    }),
  });
  const key = (await res.json()) as { id: string; vault_key: string };
  const statuses = await Promise.all(
    Array.from({ length: opts.calls }, (_, i) =>
      fetch(`${baseUrl}/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: `amount=2900&currency=usd&customer=cus_${i}`,
      }).then(
        async (r) => {
          await r.arrayBuffer();
          return r.status;
        },
        () => 0,
      ),
    ),
  );
  const record = (await (
    await fetch(`${baseUrl}/vault/keys/${key.id}`, { headers: { authorization: `Bearer ${adminToken}` } })
  ).json()) as {
    spent_total_usd: number;
    held_usd: number;
  };
  const spentMicros = Math.round((record.spent_total_usd + record.held_usd) * 1e6);
  const capMicros = Math.round(capUsd * 1e6);
  const otherStatuses: Record<string, number> = {};
  for (const s of statuses) if (s !== 200 && s !== 429) otherStatuses[s] = (otherStatuses[s] ?? 0) + 1;
  return {
    calls: opts.calls,
    expected: opts.admit,
    admitted: statuses.filter((s) => s === 200).length,
    capped: statuses.filter((s) => s === 429).length,
    otherStatuses,
    spentMicros,
    capMicros,
    overspendMicros: Math.max(0, spentMicros - capMicros),
  };
}
