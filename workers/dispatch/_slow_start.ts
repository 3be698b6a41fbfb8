/** For tests: evaluated before the sandbox worker's module, it holds the worker's start for 800 ms. */
const until = performance.now() + 800;
while (performance.now() < until) { /* a slow start */ }
