/**
 * Demo data for `deno task dev`. Each part of wharf registers a seed step here; steps must be idempotent
 * (dev re-seeds on every start and keeps what a previous start made).
 */
import type { Sql } from "../db.ts";
import { dispatchSeed } from "../../workers/dispatch/seed.ts";
import { consoleSeed } from "../../web/console/seed.ts";
import { feedSeed } from "../../workers/imgproc/seed.ts";

/** What a seed step gets. */
export interface SeedContext {
  sql: Sql;
  /** The environment the processes get (service URLs, demo credentials). */
  env: Record<string, string>;
  say(line: string): void;
}

/** A named, idempotent seed step. */
export interface SeedStep {
  name: string;
  run(ctx: SeedContext): Promise<void>;
}

/** The registered seed steps, in order. */
export const SEED_STEPS: SeedStep[] = [dispatchSeed, consoleSeed, feedSeed];

/** Runs every seed step. */
export async function seedDemoData(ctx: SeedContext): Promise<void> {
  for (const step of SEED_STEPS) {
    await step.run(ctx);
    ctx.say(`seeded: ${step.name}`);
  }
}
