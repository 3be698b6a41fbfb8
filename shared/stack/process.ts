/**
 * Child processes that wharf starts and must stop: services for dev and tests, workers under
 * `deno task dev`. Each is tracked by its process id and stopped by it (SIGTERM, then SIGKILL after a
 * grace period), never by name, so nothing else on the machine is touched.
 */
import { createLogger } from "../log.ts";

const log = createLogger("stack");

/** Options for {@linkcode startProcess}. */
export interface StartOptions {
  /** A short name for logs (`postgres`, `web`, `dispatch-1`). */
  name: string;
  cmd: string;
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Where stdout and stderr go: a file path (appended), `"inherit"`, or `"null"`. Default: `"null"`. */
  output?: string | "inherit" | "null";
  /** Signal for a graceful stop (default SIGTERM; Postgres wants SIGINT for a fast shutdown). */
  stopSignal?: Deno.Signal;
}

/** A child process wharf owns. */
export class ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #stopSignal: Deno.Signal;
  readonly #file?: Deno.FsFile;
  #exit?: Deno.CommandStatus;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess, name: string, stopSignal: Deno.Signal, file?: Deno.FsFile) {
    this.#child = child;
    this.name = name;
    this.pid = child.pid;
    this.#stopSignal = stopSignal;
    this.#file = file;
    this.status = child.status.then((s) => {
      this.#exit = s;
      try {
        this.#file?.close();
      } catch { /* already closed */ }
      return s;
    });
  }

  /** The signal {@linkcode stop} sends first. */
  get stopSignal(): Deno.Signal {
    return this.#stopSignal;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.#exit === undefined;
  }

  /** Sends `signal` to this process only. */
  kill(signal: Deno.Signal = this.#stopSignal): void {
    if (!this.running) return;
    try {
      this.#child.kill(signal);
    } catch { /* exited meanwhile */ }
  }

  /**
   * Waits until `check` says the service is ready. Fails early when the process exits (naming `logHint`,
   * where its output went) and stops the process on any failure, so a service that never came up is not
   * left running.
   */
  async waitReady(
    what: string,
    check: () => Promise<boolean>,
    timeoutMs: number,
    logHint: string,
  ): Promise<void> {
    try {
      await waitUntil(what, async () => {
        if (!this.running) throw new StopWaiting(`it exited; see ${logHint}`);
        return await check();
      }, timeoutMs);
    } catch (e) {
      await this.stop(5_000);
      throw e;
    }
  }

  /**
   * Stops the process: the graceful signal, then SIGKILL after `graceMs`. Resolves when it has exited.
   */
  async stop(graceMs = 10_000): Promise<Deno.CommandStatus> {
    if (!this.running) return await this.status;
    this.kill(this.#stopSignal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((r) => {
      timer = setTimeout(() => {
        if (this.running) {
          log.warn("process did not stop in time; killing", { name: this.name, pid: this.pid });
        }
        this.kill("SIGKILL");
        r();
      }, graceMs);
    });
    await Promise.race([this.status, killed]);
    clearTimeout(timer);
    return await this.status;
  }
}

let ownSessions = false;
const SETSID = "/usr/bin/setsid";

/**
 * From now on, start each child in a session of its own (`setsid`), out of the terminal's process
 * group. For `deno task dev`: Ctrl-C then reaches only the process that started them, which stops
 * them in order (workers first, their database last) instead of every child at once. Without it the
 * terminal's SIGINT hits Postgres while the workers are still finishing, and the parent's SIGTERM that
 * follows is each worker's second signal (exit now). Where `setsid` is missing, children start as before.
 */
export function startChildrenInOwnSessions(on = true): void {
  ownSessions = on;
}

/** Starts a child process with its output sent to a file, the terminal, or nowhere. */
export async function startProcess(options: StartOptions): Promise<ManagedProcess> {
  const output = options.output ?? "null";
  let file: Deno.FsFile | undefined;
  let stdio: "inherit" | "null" | "piped" = "null";
  if (output === "inherit") stdio = "inherit";
  else if (output !== "null") {
    file = await Deno.open(output, { create: true, append: true, write: true });
    stdio = "piped";
  }
  // A child of this process is never a process group leader, so setsid execs in place: the pid is the
  // program's own.
  const isolate = ownSessions && hasSetsid();
  const child = new Deno.Command(isolate ? SETSID : options.cmd, {
    args: isolate ? [options.cmd, ...(options.args ?? [])] : options.args ?? [],
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: stdio,
    stderr: stdio,
  }).spawn();
  if (isolate) {
    // Until setsid has exec'd the program, the pid's command line is setsid's (or, just after the fork,
    // this process's): wait until it is neither, so that what a caller records of this process
    // (recordProcesses) is the program's. Not for the program's own command line: a program may exec
    // another at once (`setpriv` execs Postgres), which would never show it. Nor an empty one: that is a
    // process in the middle of an exec (seen on a busy machine: the program then went unrecorded), or one
    // that already exited.
    const own = cmdlineOf(Deno.pid);
    const deadline = performance.now() + 10_000;
    for (;;) {
      const cmdline = cmdlineOf(child.pid);
      if (cmdline === undefined || stateOf(child.pid) === "Z") break;
      if (cmdline !== "" && !cmdline.startsWith(SETSID + "\0") && cmdline !== own) break;
      if (performance.now() > deadline) {
        log.warn("setsid did not start the program in time", { name: options.name, pid: child.pid });
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  if (file) {
    const f = file;
    // Both streams go to one file; writes are line-sized chunks, so interleaving stays readable.
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      try {
        for await (const chunk of stream) await f.write(chunk);
      } catch { /* the file was closed at exit */ }
    };
    void pump(child.stdout);
    void pump(child.stderr);
  }
  return new ManagedProcess(child, options.name, options.stopSignal ?? "SIGTERM", file);
}

/** What {@linkcode recordProcesses} keeps of a process: enough to find that very process again. */
interface RecordedProcess {
  name: string;
  pid: number;
  /** Its `/proc/<pid>/cmdline` when recorded: a pid reused by another program does not match. */
  cmdline: string;
  signal: Deno.Signal;
}

function cmdlineOf(pid: number): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return undefined;
  }
}

/** A process's state letter from /proc (`R`, `S`, `Z` for one that exited and awaits its parent…). */
function stateOf(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

/**
 * Writes the pids of `procs` to `path`, in start order, so that a later run can stop what this one
 * leaves running if it is killed without the chance to stop its children ({@linkcode
 * stopRecordedProcesses}).
 */
export async function recordProcesses(path: string, procs: ManagedProcess[]): Promise<void> {
  const records: RecordedProcess[] = [];
  for (const p of procs) {
    const cmdline = p.running ? cmdlineOf(p.pid) : undefined;
    if (cmdline) records.push({ name: p.name, pid: p.pid, cmdline, signal: p.stopSignal });
  }
  await Deno.writeTextFile(path, JSON.stringify(records));
}

/**
 * Stops the processes recorded in `path` that still run the same command line (latest started first):
 * their stop signal, then SIGKILL for any still there after `graceMs`. Removes the record and returns
 * the names of those it stopped. A missing or unreadable record stops nothing.
 */
export async function stopRecordedProcesses(path: string, graceMs = 15_000): Promise<string[]> {
  let records: RecordedProcess[] = [];
  try {
    const parsed = JSON.parse(await Deno.readTextFile(path));
    if (Array.isArray(parsed)) {
      records = parsed.filter((r): r is RecordedProcess =>
        typeof r?.name === "string" && Number.isInteger(r?.pid) && r.pid > 1 && r.pid !== Deno.pid &&
        typeof r?.cmdline === "string" && r.cmdline.length > 0 && typeof r?.signal === "string" &&
        /^SIG[A-Z0-9]+$/.test(r.signal)
      );
    }
  } catch {
    return [];
  }
  const alive = (r: RecordedProcess) => cmdlineOf(r.pid) === r.cmdline;
  const signal = (r: RecordedProcess, sig: Deno.Signal) => {
    try {
      if (alive(r)) Deno.kill(r.pid, sig);
    } catch { /* gone meanwhile */ }
  };
  const stopped = records.filter(alive).reverse();
  for (const r of stopped) {
    signal(r, r.signal);
    // One at a time, in order: the workers before the database they write to.
    const deadline = performance.now() + graceMs;
    while (alive(r) && performance.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    if (alive(r)) {
      log.warn("process did not stop in time; killing", { name: r.name, pid: r.pid });
      signal(r, "SIGKILL");
    }
  }
  await Deno.remove(path).catch(() => {});
  return stopped.map((r) => r.name);
}

let setsidFound: boolean | undefined;
function hasSetsid(): boolean {
  if (setsidFound === undefined) {
    try {
      setsidFound = Deno.statSync(SETSID).isFile;
    } catch {
      setsidFound = false;
    }
  }
  return setsidFound;
}

/** Runs a command to completion; throws with its stderr when it fails. */
export async function run(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; stdin?: string } = {},
): Promise<{ stdout: string; stderr: string }> {
  const child = new Deno.Command(cmd, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  const stdout = dec.decode(out.stdout);
  const stderr = dec.decode(out.stderr);
  if (!out.success) {
    throw new Error(`Command ${cmd} ${args[0] ?? ""} failed with exit code ${out.code}: ${stderr.trim()}`);
  }
  return { stdout, stderr };
}

/** A free TCP port on 127.0.0.1, chosen by the OS. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** True when nothing listens on `port` at 127.0.0.1. */
export function portIsFree(port: number): boolean {
  try {
    const l = Deno.listen({ hostname: "127.0.0.1", port });
    l.close();
    return true;
  } catch {
    return false;
  }
}

/** Thrown by a {@linkcode waitUntil} check to give up at once (the thing waited for can never come). */
export class StopWaiting extends Error {}

/**
 * Polls `check` until it resolves true, or throws after `timeoutMs` with `what` in the message; at once
 * when `check` throws {@linkcode StopWaiting} (other errors are retried, and the last one is reported).
 */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  while (performance.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      if (e instanceof StopWaiting) throw new Error(`Gave up waiting for ${what}: ${e.message}`);
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `Timed out after ${timeoutMs} ms waiting for ${what}` + (last ? `: ${(last as Error).message}` : ""),
  );
}

/** True when a TCP connection to 127.0.0.1:`port` succeeds. */
export async function tcpOpen(port: number, hostname = "127.0.0.1"): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname, port });
    c.close();
    return true;
  } catch {
    return false;
  }
}
