/**
 * SidecarClient: spawns the task sidecar, speaks the protocol to it, supervises it.
 *
 * Lifecycle (one `Session` per spawned process):
 *   starting --ready--> ready --unexpected exit--> restarting --ready--> ready (emits 'restarted')
 *                                             \--attempts exhausted--> failed (emits 'restart-failed')
 *   any --close()--> closing --> closed
 * Calls made while starting/restarting wait for the next ready sidecar (within their timeout).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

import { RpcConnection, type CallOptions, type Logger } from './connection';
import { SidecarError } from './errors';
import { LineDecoder } from './framing';
import {
  ClientErrorCode,
  DEFAULT_MAX_MESSAGE_BYTES,
  type CreateManyItem,
  type CreateTaskParams,
  type GetTaskParams,
  type IdParams,
  type ListTasksParams,
  type MethodName,
  type ParamsOf,
  type PruneParams,
  type QueueScopeParams,
  type QueueStatus,
  type ReadyInfo,
  type ResultOf,
  type SetConcurrencyParams,
  type TaskDeletedParams,
  type TaskUpdatedParams,
} from './protocol';
import { resolveSidecarCommand } from './resolve';

export type { CallOptions, LogEntry, Logger, LogLevel } from './connection';

export interface RestartPolicy {
  /** Consecutive restart attempts before giving up (default 5). */
  maxAttempts?: number;
  /** First delay; doubles per attempt (default 250 ms). */
  initialDelayMs?: number;
  /** Cap on the delay (default 10 s). */
  maxDelayMs?: number;
  /** A sidecar that stays up this long resets the attempt count (default 30 s). */
  stableAfterMs?: number;
}

export interface SidecarClientOptions {
  /** The SQLite database file (the client passes `--db dbPath`). */
  dbPath: string;
  /** Program to run; with `args`, replaces the default (see resolveSidecarCommand). */
  command?: string;
  args?: string[];
  cwd?: string;
  /** Added to process.env for the sidecar (PYTHONUTF8=1 is always set). */
  env?: NodeJS.ProcessEnv;
  /** Handler modules to load (`--handlers X` each): module names, or from source the paths of `.py` files (a frozen sidecar loads only modules frozen into it). */
  handlers?: string[];
  /** More sidecar options appended last, e.g. `['--concurrency', '2']`. */
  extraArgs?: string[];
  /** Reject start (and fail a restart attempt) when `sidecar.ready` takes longer (default 30 s). */
  startTimeoutMs?: number;
  /** Default per-call timeout (default 30 s; 0 = none). */
  callTimeoutMs?: number;
  /** Receives the sidecar's stderr lines, stray stdout lines and the bridge's own messages. */
  logger?: Logger;
  /** Restart policy, or false to never restart. */
  restart?: RestartPolicy | false;
  /** close(): how long to wait for the sidecar to exit after system.shutdown before SIGTERM (default 10 s). */
  shutdownTimeoutMs?: number;
  /** close(): how long to wait after SIGTERM before SIGKILL (default 3 s). */
  killTimeoutMs?: number;
  /** Largest accepted protocol line from the sidecar (default 256 MiB); a longer answer fails its call (ResponseTooLarge). */
  maxLineBytes?: number;
  /**
   * Longest request line the sidecar reads, in bytes (its `--max-message-bytes`, default 8 MiB).
   * When set, it is passed to the sidecar. A longer request fails at once with -32600 and is
   * never written. Without it, a `--max-message-bytes` in `args`/`extraArgs` is taken, else 8 MiB.
   */
  maxMessageBytes?: number;
}

export interface ExitInfo {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** true when the client asked for it (close()). */
  expected: boolean;
}

export interface ClientEvents {
  /** Every `task.updated` notification, in order. */
  'task.updated': TaskUpdatedParams;
  'task.deleted': TaskDeletedParams;
  /** Queue switches or limits changed (queue.updated). */
  'queue.updated': QueueStatus;
  /** Any notification (including ones this version does not know). */
  notification: { method: string; params: unknown };
  /** A sidecar became ready (the first start and every restart). */
  ready: ReadyInfo;
  /** A replacement sidecar is ready after an unexpected exit: resync your state. */
  restarted: ReadyInfo;
  /** The sidecar process exited. */
  exit: ExitInfo;
  /** A restart is scheduled. */
  restarting: { attempt: number; maxAttempts: number; delayMs: number };
  /** A restart attempt failed (the next one may follow). */
  'restart-attempt-failed': { attempt: number; error: SidecarError };
  /** Restarts exhausted: the client is unusable (calls reject); close() it. */
  'restart-failed': { attempts: number; error: SidecarError };
  /** close() finished. */
  closed: undefined;
}
export type ClientEventName = keyof ClientEvents;
type Listener<E extends ClientEventName> = (payload: ClientEvents[E]) => void;

export type ClientState = 'starting' | 'ready' | 'restarting' | 'failed' | 'closing' | 'closed';

const STDERR_TAIL_LINES = 40;

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
  settled: boolean;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const d: Deferred<T> = {
    promise: new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    }),
    resolve: (v) => {
      if (!d.settled) {
        d.settled = true;
        resolve(v);
      }
    },
    reject: (e) => {
      if (!d.settled) {
        d.settled = true;
        reject(e);
      }
    },
    settled: false,
  };
  d.promise.catch(() => undefined); // a gate nobody waits on must not be an unhandled rejection
  return d;
}

function startFailed(err: unknown): SidecarError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return new SidecarError(
    ClientErrorCode.StartFailed,
    `the sidecar could not be started (${err instanceof Error ? err.message : String(err)})`,
    { pid: null, errno: typeof code === 'string' ? code : null },
    { cause: err },
  );
}

class Session {
  readonly conn: RpcConnection;
  readonly ready = deferred<ReadyInfo>();
  readonly exited = deferred<ExitInfo>();
  readonly stderrTail: string[] = [];
  readyInfo: ReadyInfo | null = null;
  exitInfo: ExitInfo | null = null;
  expectedExit = false;
  private stdoutEnded = false;
  private stderrEnded = false;
  private finalizing = false;

  constructor(
    readonly child: ChildProcessWithoutNullStreams,
    private readonly logger: Logger | undefined,
    limits: { maxLineBytes: number | undefined; maxRequestBytes: number },
    onNotification: (session: Session, method: string, params: unknown) => void,
    private readonly onExit: (session: Session, info: ExitInfo) => void,
    private readonly onExiting: (session: Session) => void = () => undefined,
  ) {
    const pid = child.pid;
    this.conn = new RpcConnection({
      input: child.stdout,
      output: child.stdin,
      pid,
      logger,
      ...(limits.maxLineBytes !== undefined ? { maxLineBytes: limits.maxLineBytes } : {}),
      maxRequestBytes: limits.maxRequestBytes,
      onNotification: (method, params) => {
        if (method === 'sidecar.ready' && !this.ready.settled) {
          this.readyInfo = params as ReadyInfo;
          this.ready.resolve(this.readyInfo);
          return;
        }
        onNotification(this, method, params);
      },
    });
    const stderr = new LineDecoder((line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
      this.logger?.({ level: stderrLevel(line), source: 'stderr', message: line, pid });
    });
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.stderr.on('end', () => {
      stderr.end();
      this.stderrEnded = true;
    });
    child.stdout.on('end', () => {
      this.stdoutEnded = true;
    });
    // EPIPE / ECONNRESET when the sidecar dies while we write: the exit path handles it.
    child.stdin.on('error', (err) => {
      this.logger?.({ level: 'debug', source: 'bridge', message: `sidecar stdin: ${err.message}`, pid });
    });
    child.stdout.on('error', (err) => {
      this.logger?.({ level: 'debug', source: 'bridge', message: `sidecar stdout: ${err.message}`, pid });
    });
    child.on('error', (err) => {
      // spawn failure (ENOENT, EACCES) or a failed kill.
      this.logger?.({ level: 'error', source: 'bridge', message: `sidecar process error: ${err.message}`, pid });
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) {
        this.finalize({ pid, code: null, signal: null, expected: this.expectedExit }, err);
      }
    });
    child.on('exit', (code, signal) => {
      // Let the rest of stdout (answers written just before exiting) and stderr (its last words,
      // for the error message) be read first, but do not wait long for a grandchild that may hold
      // a pipe open.
      const info: ExitInfo = { pid, code, signal, expected: this.expectedExit };
      const done = (): boolean => this.stdoutEnded && this.stderrEnded;
      // The process is gone even if a grandchild still holds its stderr (up to 500 ms below):
      // new calls must wait for the next sidecar from now on, not write to a closed stdin.
      this.onExiting(this);
      if (done()) {
        this.finalize(info);
        return;
      }
      const timer = setTimeout(() => this.finalize(info), 500);
      const check = (): void => {
        if (!done()) return;
        clearTimeout(timer);
        setImmediate(() => this.finalize(info));
      };
      child.stdout.once('end', check);
      child.stderr.once('end', check);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exitInfo === null && this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined;
  }

  stderrText(): string {
    return this.stderrTail.join('\n');
  }

  private finalize(info: ExitInfo, spawnError?: Error): void {
    if (this.finalizing) return;
    this.finalizing = true;
    info.expected = this.expectedExit;
    this.exitInfo = info;
    const how = spawnError
      ? `could not be started (${spawnError.message})`
      : `exited unexpectedly (${info.signal ? `signal ${info.signal}` : `exit code ${String(info.code)}`})`;
    const error = new SidecarError(
      this.expectedExit ? ClientErrorCode.NotRunning : ClientErrorCode.SidecarExited,
      this.expectedExit ? 'the sidecar was shut down' : `the sidecar ${how}`,
      { pid: info.pid ?? null, exitCode: info.code, signal: info.signal, stderrTail: this.stderrTail.slice(-10) },
    );
    this.conn.close(error);
    this.ready.reject(error);
    this.exited.resolve(info);
    this.onExit(this, info);
  }
}

/** Resolves true when `promise` settles within `ms`, false otherwise; never keeps the event loop alive after. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Clients with a live child: killed synchronously if the Node process exits without close(). */
const liveClients = new Set<SidecarClient>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const client of liveClients) client.killNow();
  });
}

export class SidecarClient {
  private readonly opts: SidecarClientOptions;
  private readonly listeners = new Map<ClientEventName, Set<(payload: never) => void>>();
  private session: Session | null = null;
  private gate = deferred<Session>();
  private exitingSession: Session | null = null;
  private stateValue: ClientState = 'starting';
  private restartAttempts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private stableTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private readonly callTimeoutMs: number;
  private readonly restartPolicy: Required<RestartPolicy> | null;

  /** Spawn the sidecar and resolve once it reported `sidecar.ready`. */
  static async start(options: SidecarClientOptions): Promise<SidecarClient> {
    const client = new SidecarClient(options);
    await client.launchFirst();
    return client;
  }

  private constructor(options: SidecarClientOptions) {
    if (!options || typeof options.dbPath !== 'string' || options.dbPath.length === 0) {
      throw new TypeError('SidecarClient.start: dbPath is required');
    }
    if (options.maxMessageBytes !== undefined && !(Number.isSafeInteger(options.maxMessageBytes) && options.maxMessageBytes > 0)) {
      throw new TypeError('SidecarClient.start: maxMessageBytes must be a positive integer');
    }
    this.opts = { ...options };
    this.callTimeoutMs = options.callTimeoutMs ?? 30_000;
    this.restartPolicy =
      options.restart === false
        ? null
        : {
            maxAttempts: options.restart?.maxAttempts ?? 5,
            initialDelayMs: options.restart?.initialDelayMs ?? 250,
            maxDelayMs: options.restart?.maxDelayMs ?? 10_000,
            stableAfterMs: options.restart?.stableAfterMs ?? 30_000,
          };
  }

  // ------------------------------------------------------------------ state

  get state(): ClientState {
    return this.stateValue;
  }

  /** What the current sidecar reported in `sidecar.ready` (updated on every restart). */
  get readyInfo(): ReadyInfo | null {
    return this.session?.readyInfo ?? null;
  }

  /** Process id of the current sidecar (updated on every restart). */
  get pid(): number | undefined {
    return this.session?.pid;
  }

  /** The program and arguments the client runs (after defaults and appended options). */
  get commandLine(): { command: string; args: string[]; cwd: string | undefined } {
    return this.buildCommand();
  }

  // ------------------------------------------------------------------ events

  /** Subscribe; returns the unsubscribe function. */
  on<E extends ClientEventName>(event: E, listener: Listener<E>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (payload: never) => void);
    return () => this.off(event, listener);
  }

  once<E extends ClientEventName>(event: E, listener: Listener<E>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  off<E extends ClientEventName>(event: E, listener: Listener<E>): void {
    this.listeners.get(event)?.delete(listener as (payload: never) => void);
  }

  private emit<E extends ClientEventName>(event: E, payload: ClientEvents[E]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<E>)(payload);
      } catch (err) {
        this.log('error', `listener for '${event}' threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  }

  // ------------------------------------------------------------------ calls

  /** Call any protocol method (typed). Prefer the namespaced methods below. */
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, options: CallOptions = {}): Promise<ResultOf<M>> {
    if (method === 'system.shutdown') return (await this.system.shutdown()) as ResultOf<M>;
    const timeoutMs = options.timeoutMs ?? this.callTimeoutMs;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
    // A ready sidecar is used at once, so the request is written within this call rather than
    // after an await (each hop costs tens of µs on an idle machine: docs/benchmark-findings.md).
    const session = this.readySession() ?? (await this.sessionForCall(method, deadline, options.signal));
    const remaining = deadline === Number.POSITIVE_INFINITY ? 0 : Math.max(1, deadline - Date.now());
    const callOptions: CallOptions = { timeoutMs: remaining };
    if (options.signal) callOptions.signal = options.signal;
    return (await session.conn.request(method, params, callOptions)) as ResultOf<M>;
  }

  readonly system = {
    ping: (options?: CallOptions) => this.call('system.ping', undefined, options),
    info: (options?: CallOptions) => this.call('system.info', undefined, options),
    /** Asks the sidecar to stop and closes the client (no restart follows). Same as close(). */
    shutdown: async (): Promise<null> => {
      await this.close();
      return null;
    },
  };

  readonly tasks = {
    create: (params: CreateTaskParams, options?: CallOptions) => this.call('tasks.create', params, options),
    createMany: (params: { tasks: CreateManyItem[] }, options?: CallOptions) => this.call('tasks.createMany', params, options),
    get: (params: GetTaskParams, options?: CallOptions) => this.call('tasks.get', params, options),
    list: (params: ListTasksParams = {}, options?: CallOptions) => this.call('tasks.list', params, options),
    stats: (options?: CallOptions) => this.call('tasks.stats', undefined, options),
    cancel: (params: IdParams, options?: CallOptions) => this.call('tasks.cancel', params, options),
    retry: (params: IdParams, options?: CallOptions) => this.call('tasks.retry', params, options),
    delete: (params: IdParams, options?: CallOptions) => this.call('tasks.delete', params, options),
    prune: (params: PruneParams = {}, options?: CallOptions) => this.call('tasks.prune', params, options),
    tree: (params: IdParams, options?: CallOptions) => this.call('tasks.tree', params, options),
    pause: (params: IdParams, options?: CallOptions) => this.call('tasks.pause', params, options),
    resume: (params: IdParams, options?: CallOptions) => this.call('tasks.resume', params, options),
  };

  readonly queue = {
    pause: (params: QueueScopeParams = {}, options?: CallOptions) => this.call('queue.pause', params, options),
    resume: (params: QueueScopeParams = {}, options?: CallOptions) => this.call('queue.resume', params, options),
    setConcurrency: (params: SetConcurrencyParams, options?: CallOptions) => this.call('queue.setConcurrency', params, options),
    status: (options?: CallOptions) => this.call('queue.status', undefined, options),
  };

  readonly rpc = {
    /** The sidecar's OpenRPC description of its methods. */
    discover: (options?: CallOptions) => this.call('rpc.discover', undefined, options),
  };

  private readySession(): Session | null {
    return this.stateValue === 'ready' && this.session && !this.session.conn.isClosed ? this.session : null;
  }

  private async sessionForCall(method: string, deadline: number, signal: AbortSignal | undefined): Promise<Session> {
    const ready = this.readySession();
    if (ready) return ready;
    if (this.stateValue === 'closing' || this.stateValue === 'closed') {
      throw new SidecarError(ClientErrorCode.NotRunning, `${method}: the sidecar client is closed`, null, { method });
    }
    if (this.stateValue === 'failed') {
      throw new SidecarError(ClientErrorCode.NotRunning, `${method}: the sidecar could not be restarted`, null, { method });
    }
    // starting / restarting: wait for the next ready sidecar, within the call's own deadline.
    const waits: Promise<Session>[] = [this.gate.promise];
    const cleanups: Array<() => void> = [];
    if (deadline !== Number.POSITIVE_INFINITY) {
      waits.push(
        new Promise<Session>((_, reject) => {
          const t = setTimeout(
            () => reject(new SidecarError(ClientErrorCode.Timeout, `${method}: the sidecar was not ready in time`, null, { method })),
            Math.max(0, deadline - Date.now()),
          );
          cleanups.push(() => clearTimeout(t));
        }),
      );
    }
    if (signal) {
      waits.push(
        new Promise<Session>((_, reject) => {
          const onAbort = (): void => reject(new SidecarError(ClientErrorCode.Cancelled, `${method}: cancelled by the caller`, null, { method }));
          if (signal.aborted) onAbort();
          signal.addEventListener('abort', onAbort, { once: true });
          cleanups.push(() => signal.removeEventListener('abort', onAbort));
        }),
      );
    }
    try {
      return await Promise.race(waits);
    } catch (err) {
      if (err instanceof SidecarError && err.method === undefined) {
        throw new SidecarError(err.code, `${method}: ${err.message}`, err.data, { method });
      }
      throw err;
    } finally {
      for (const c of cleanups) c();
    }
  }

  // ------------------------------------------------------------------ process management

  private buildCommand(): { command: string; args: string[]; cwd: string | undefined } {
    const o = this.opts;
    let command: string;
    let args: string[];
    let cwd: string | undefined = o.cwd;
    if (o.command !== undefined) {
      command = o.command;
      args = [...(o.args ?? [])];
    } else {
      const resolved = resolveSidecarCommand(o.env ? { env: { ...process.env, ...o.env } } : {});
      command = resolved.command;
      args = [...resolved.args, ...(o.args ?? [])];
      cwd = cwd ?? resolved.cwd;
    }
    args.push('--db', o.dbPath);
    for (const h of o.handlers ?? []) args.push('--handlers', h);
    args.push(...(o.extraArgs ?? []));
    // Last, so the limit the client enforces is the one the sidecar takes.
    if (o.maxMessageBytes !== undefined) args.push('--max-message-bytes', String(o.maxMessageBytes));
    return { command, args, cwd };
  }

  private spawnSession(): Session {
    const { command, args, cwd } = this.buildCommand();
    this.log('debug', `spawning ${command} ${args.join(' ')}${cwd ? ` (cwd ${cwd})` : ''}`);
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, ...this.opts.env, PYTHONUTF8: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true,
      shell: false,
    });
    const session = new Session(
      child,
      this.opts.logger,
      { maxLineBytes: this.opts.maxLineBytes, maxRequestBytes: maxMessageBytesOf(args) },
      (s, method, params) => this.onNotification(s, method, params),
      (s, info) => this.onSessionExit(s, info),
      (s) => this.onSessionExiting(s),
    );
    this.session = session;
    liveClients.add(this);
    installExitHook();
    return session;
  }

  /** Wait for `sidecar.ready` of `session`, or fail (timeout: the process is killed). */
  private async awaitReady(session: Session): Promise<ReadyInfo> {
    const timeoutMs = this.opts.startTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = Symbol('timeout');
    const timeout = new Promise<typeof timedOut>((resolve) => {
      timer = setTimeout(() => resolve(timedOut), timeoutMs);
    });
    let outcome: ReadyInfo | typeof timedOut;
    try {
      outcome = await Promise.race([session.ready.promise, timeout]);
    } catch (err) {
      // Exited (or could not be spawned) before ready: give the stderr tail, e.g. "another
      // task-sidecar already uses ...".
      const e = err instanceof SidecarError ? err : new SidecarError(ClientErrorCode.StartFailed, String(err));
      throw new SidecarError(ClientErrorCode.StartFailed, `${e.message} before it was ready` + tailText(session.stderrText()), e.data);
    } finally {
      clearTimeout(timer);
    }
    if (outcome !== timedOut) return outcome;
    // Timed out: kill it, and build the message once its stderr has been read to the end.
    session.expectedExit = true;
    if (session.alive) session.child.kill('SIGKILL');
    await session.exited.promise;
    throw new SidecarError(
      ClientErrorCode.StartFailed,
      `the sidecar did not report sidecar.ready within ${timeoutMs} ms` + tailText(session.stderrText()),
      { pid: session.pid ?? null, stderrTail: session.stderrTail.slice(-10) },
    );
  }

  private async launchFirst(): Promise<void> {
    let session: Session;
    try {
      session = this.spawnSession();
      await this.awaitReady(session);
    } catch (err) {
      // spawn() itself throws for some causes (a cwd that is a file, an empty program name, a NUL
      // in an argument): those are start failures too, not raw Node errors
      const error = err instanceof SidecarError ? err : startFailed(err);
      this.stateValue = 'closed';
      liveClients.delete(this);
      this.gate.reject(error);
      throw error;
    }
    this.becomeReady(session, false);
  }

  private becomeReady(session: Session, restarted: boolean): void {
    if (this.stateValue === 'closing' || this.stateValue === 'closed') return;
    this.stateValue = 'ready';
    this.gate.resolve(session);
    const info = session.readyInfo!;
    this.emit('ready', info);
    if (restarted) this.emit('restarted', info);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (this.restartPolicy) {
      this.stableTimer = setTimeout(() => {
        if (this.session === session && session.alive) this.restartAttempts = 0;
      }, this.restartPolicy.stableAfterMs);
      this.stableTimer.unref();
    }
  }

  private onNotification(session: Session, method: string, params: unknown): void {
    if (session !== this.session) return;
    if (method === 'task.updated') this.emit('task.updated', params as TaskUpdatedParams);
    else if (method === 'task.deleted') this.emit('task.deleted', params as TaskDeletedParams);
    else if (method === 'queue.updated') this.emit('queue.updated', params as QueueStatus);
    this.emit('notification', { method, params });
  }

  /** The ready sidecar's process has exited; its pipes may take a moment more to close. */
  private onSessionExiting(session: Session): void {
    if (session !== this.session || session.readyInfo === null || this.stateValue !== 'ready') return;
    this.stateValue = 'restarting';
    this.gate = deferred<Session>();
    this.exitingSession = session;
  }

  private onSessionExit(session: Session, info: ExitInfo): void {
    if (session !== this.session) return;
    // A sidecar that never became ready: awaitReady (start or restart attempt) reports it.
    if (session.readyInfo === null) return;
    liveClients.delete(this);
    const exiting = this.exitingSession === session;
    this.exitingSession = null;
    // else closing/closed: expected
    const unexpected = this.stateValue === 'ready' || (exiting && this.stateValue === 'restarting');
    if (this.stateValue === 'ready') {
      // Before 'exit' is emitted: a call made by an exit listener must wait behind a new gate for
      // the next sidecar, not find the dead session behind the old, resolved one.
      this.stateValue = 'restarting';
      this.gate = deferred<Session>();
    }
    this.emit('exit', info);
    // An exit listener may have called close(), which owns what follows.
    if (!unexpected || this.stateValue !== 'restarting') return;
    this.log('warn', `sidecar pid ${String(info.pid)} exited unexpectedly (code ${String(info.code)}, signal ${String(info.signal)})`);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.scheduleRestart(
      new SidecarError(ClientErrorCode.SidecarExited, 'the sidecar exited unexpectedly', {
        exitCode: info.code,
        signal: info.signal,
      }),
    );
  }

  private scheduleRestart(lastError: SidecarError): void {
    const policy = this.restartPolicy;
    if (!policy || this.restartAttempts >= policy.maxAttempts) {
      this.stateValue = 'failed';
      const attempts = this.restartAttempts;
      const error = new SidecarError(
        ClientErrorCode.StartFailed,
        policy ? `the sidecar could not be restarted after ${attempts} attempts: ${lastError.message}` : `the sidecar exited and restarts are disabled`,
        lastError.data,
      );
      this.gate.reject(error);
      this.emit('restart-failed', { attempts, error });
      return;
    }
    this.stateValue = 'restarting';
    this.restartAttempts += 1;
    const attempt = this.restartAttempts;
    const base = Math.min(policy.initialDelayMs * 2 ** (attempt - 1), policy.maxDelayMs);
    const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
    this.emit('restarting', { attempt, maxAttempts: policy.maxAttempts, delayMs });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      void this.restartNow(attempt);
    }, delayMs);
  }

  private async restartNow(attempt: number): Promise<void> {
    if (this.stateValue !== 'restarting') return;
    let session: Session;
    try {
      session = this.spawnSession();
      await this.awaitReady(session);
    } catch (err) {
      const error = err instanceof SidecarError ? err : startFailed(err);
      this.log('error', `restart attempt ${attempt} failed: ${error.message}`);
      if (this.stateValue !== 'restarting') return;
      this.emit('restart-attempt-failed', { attempt, error });
      this.scheduleRestart(error);
      return;
    }
    if (this.stateValue !== 'restarting') return; // close() raced us; close() handles the session
    this.becomeReady(session, true);
  }

  /**
   * Stop the sidecar: `system.shutdown`, wait for it to exit, then SIGTERM, then SIGKILL.
   * Pending calls reject. Resolves once no sidecar process is left. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.stateValue = 'closing';
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.restartTimer = null;
    const closedError = new SidecarError(ClientErrorCode.NotRunning, 'the sidecar client is closed');
    this.gate.reject(closedError);
    const session = this.session;
    if (session && session.alive) {
      session.expectedExit = true;
      const shutdownTimeout = this.opts.shutdownTimeoutMs ?? 10_000;
      const killTimeout = this.opts.killTimeoutMs ?? 3_000;
      session.conn
        .request('system.shutdown', undefined, { timeoutMs: Math.min(shutdownTimeout, 5_000) })
        .then(
          () => session.child.stdin.end(),
          () => session.child.stdin.end(),
        );
      let exited = await settlesWithin(session.exited.promise, shutdownTimeout);
      if (!exited && session.alive) {
        this.log('warn', `sidecar pid ${String(session.pid)} did not exit after system.shutdown; sending SIGTERM`);
        session.child.kill('SIGTERM');
        exited = await settlesWithin(session.exited.promise, killTimeout);
      }
      if (!exited && session.alive) {
        this.log('warn', `sidecar pid ${String(session.pid)} ignored SIGTERM; sending SIGKILL`);
        session.child.kill('SIGKILL');
      }
      await session.exited.promise;
    }
    session?.conn.close(closedError);
    liveClients.delete(this);
    this.stateValue = 'closed';
    this.emit('closed', undefined);
  }

  /** Synchronous last resort (process 'exit' hook): SIGKILL the current sidecar. */
  killNow(): void {
    const s = this.session;
    if (s && s.alive) {
      s.expectedExit = true;
      try {
        s.child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void {
    this.opts.logger?.({ level, source: 'bridge', message, pid: this.session?.pid });
  }
}

/** Level of a stderr line from Python's logging format ("... WARNING sidecar: ..."); info by default. */
export function stderrLevel(line: string): 'debug' | 'info' | 'warn' | 'error' {
  const m = /\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|Traceback)\b/.exec(line.slice(0, 120));
  switch (m?.[1]) {
    case 'DEBUG':
      return 'debug';
    case 'WARNING':
    case 'WARN':
      return 'warn';
    case 'ERROR':
    case 'CRITICAL':
    case 'FATAL':
    case 'Traceback':
      return 'error';
    default:
      return 'info';
  }
}

/** The request size limit the sidecar takes from its command line: its last `--max-message-bytes`, else the default. */
function maxMessageBytesOf(args: readonly string[]): number {
  let limit = DEFAULT_MAX_MESSAGE_BYTES;
  args.forEach((arg, i) => {
    const value = arg === '--max-message-bytes' ? args[i + 1] : arg.startsWith('--max-message-bytes=') ? arg.slice(arg.indexOf('=') + 1) : undefined;
    const n = Number(value);
    if (value !== undefined && Number.isSafeInteger(n) && n > 0) limit = n; // else the sidecar refuses to start (exit 2)
  });
  return limit;
}

function tailText(stderr: string): string {
  const t = stderr.trim();
  return t ? `\n--- sidecar stderr (tail) ---\n${t.slice(-4000)}` : '';
}
