/** Test helpers for dispatch: a node running on a test database until the test lets go of it. */
import { createLogger } from "../../shared/log.ts";
import type { TestDatabase } from "../../shared/testing/mod.ts";
import { type NodeOptions, type NodeStatus, runNode } from "./node.ts";

/** Starts a node on `db` (schema `control`, 600 ms lease, concurrency 4); `options` override. */
export function startTestNode(db: TestDatabase, options: Partial<NodeOptions> = {}) {
  const controller = new AbortController();
  const status: NodeStatus = { master: false, running: 0, done: 0, failed: 0 };
  const done = runNode(
    {
      sql: db.sql,
      functionSql: db.sql,
      schema: "control",
      nodeId: `n-${crypto.randomUUID()}`,
      bind: "localhost:0",
      log: createLogger("dispatch-test", { level: "error" }),
      leaseMs: 600,
      concurrency: 4,
      pollMs: 200,
      trustedKeys: [],
      ...options,
    },
    controller.signal,
    status,
  );
  const stop = async () => {
    controller.abort();
    await done;
  };
  return { status, stop, [Symbol.asyncDispose]: stop };
}
