/**
 * The console's page registry: navigation order is array order. A part of wharf adds its page by
 * writing `web/routes/console/<part>.tsx` that exports a {@linkcode ConsolePage}, then adding one
 * import and one entry here.
 */
import type { ConsolePage } from "./page.ts";
import { overviewPage } from "./overview.tsx";
import { functionsPage } from "./functions.tsx";
import { eventsPage } from "./events.tsx";
import { schedulesPage } from "./schedules.tsx";
import { auditPage } from "./audit.tsx";

/** Every console page, in navigation order. */
export const CONSOLE_PAGES: ConsolePage[] = [
  overviewPage,
  functionsPage,
  eventsPage,
  schedulesPage,
  auditPage,
];
