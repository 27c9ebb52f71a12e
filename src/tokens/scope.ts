import type { Caller } from "../auth/admin-auth";
import type { Store } from "../store/index";

/**
 * The audit as the caller may read it: an issuer, only the rows of the keys it minted, in every view (rows,
 * spend, export) because the filter is applied where they all read; everyone else, everything.
 */
export function auditViewOf<S extends Pick<Store, "listAudit" | "spendBy">>(store: S, caller: Caller): S {
  if (caller.role !== "issuer") return store;
  const mintedBy = caller.tokenId;
  return {
    ...store,
    listAudit: (filter) => store.listAudit({ ...filter, mintedBy }),
    spendBy: (group, filter) => store.spendBy(group, { ...filter, mintedBy }),
  };
}
