/**
 * What `deno task dev` runs besides the services: the web process and every worker, with how many
 * copies. Each part of wharf adds its entry here when it lands.
 */
import { replicateDemoEnv } from "../../workers/replicate/seed.ts";

/** One long-running process of wharf. */
export interface Component {
  /** Name in logs and in `OPS_PORT` assignment (`web`, `hydrate`, `dispatch`). */
  name: string;
  /** Entry point, relative to the project root. */
  entry: string;
  /** Copies to run (dispatch runs two nodes to show leadership). Default 1. */
  copies?: number;
  /** Extra environment for this component, given the shared dev environment. */
  env?: (shared: Record<string, string>) => Record<string, string>;
  /** The web process serves the console; it gets `WEB_PORT` rather than an ops port. */
  web?: boolean;
}

/** Every component `deno task dev` starts, in start order. */
export const COMPONENTS: Component[] = [
  { name: "web", entry: "web/main.ts", web: true },
  { name: "dispatch", entry: "workers/dispatch/main.ts", copies: 2 },
  {
    name: "replicate",
    entry: "workers/replicate/main.ts",
    env: (shared) => replicateDemoEnv(shared),
  },
  // The default mapping over app.users (or public.users) with DATABASE_URL and REDIS_URL from the dev
  // environment; a short period so that the console shows fresh syncs.
  { name: "hydrate", entry: "workers/hydrate/main.ts", env: () => ({ HYDRATE_PERIOD_S: "30" }) },
  { name: "imgproc", entry: "workers/imgproc/main.ts" },
];
