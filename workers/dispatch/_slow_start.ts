/** For tests: evaluated before the sandbox worker's module, it holds the worker's start for 400 ms. */
const until = performance.now() + 400;
while (performance.now() < until) { /* a slow start */ }
