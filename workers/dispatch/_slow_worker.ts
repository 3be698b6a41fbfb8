/** For tests: the sandbox worker, started slowly (see `_slow_start.ts`). */
import "./_slow_start.ts";
import "./sandbox_worker.ts";
