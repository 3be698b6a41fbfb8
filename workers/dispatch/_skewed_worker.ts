/**
 * For tests: the sandbox worker as it runs when started after a step of the wall clock (an NTP correction,
 * a virtual machine resumed): its `performance.timeOrigin`, the wall clock at its start, is off by the step
 * (`?skew=` ms) against the node's, while its `performance.now()` stays monotonic.
 */
import "./sandbox_worker.ts";

const skew = Number(new URL(import.meta.url).searchParams.get("skew") ?? 0);
const origin = performance.timeOrigin;
Object.defineProperty(performance, "timeOrigin", { get: () => origin + skew });
