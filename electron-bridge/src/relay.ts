/**
 * Main-process relay: exposes an allow-list of sidecar methods to renderers through
 * `ipcMain.handle`, treating every renderer as untrusted (sender frame checked, params validated
 * before anything reaches the sidecar), and pushes task events to every window.
 *
 * Typed against structural stand-ins of Electron's objects so it can be tested without Electron
 * (Electron's real IpcMain / BrowserWindow satisfy them).
 */
import { SidecarError, type SidecarErrorShape } from './errors';
import {
  IPC_EVENT_CHANNEL,
  channelFor,
  rendererMethods,
  type IpcEnvelope,
  type RendererMethod,
  type TaskEvent,
} from './ipc-contract';
import { ClientErrorCode, ErrorCode, type JsonValue, type MethodName, type ParamsOf, type QueueStatus, type ReadyInfo, type ResultOf, type TaskDeletedParams, type TaskUpdatedParams } from './protocol';
import { validateParams } from './validate';
import type { CallOptions, LogEntry } from './connection';

export interface SenderFrameLike {
  url: string;
  /** Electron's WebFrameMain.parent: null for a top-level frame. */
  parent?: unknown;
}
export interface WebContentsLike {
  send(channel: string, ...args: unknown[]): void;
  isDestroyed?(): boolean;
  id?: number;
  /** The page's URL (Electron's webContents.getURL): events go only to pages the origin check allows. */
  getURL?(): string;
}
export interface IpcMainInvokeEventLike {
  sender: WebContentsLike;
  senderFrame: SenderFrameLike | null;
}
export interface IpcMainLike {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Electron's own signature
  handle(channel: string, listener: (event: IpcMainInvokeEventLike, ...args: any[]) => unknown): void;
  removeHandler(channel: string): void;
}
export interface WindowLike {
  webContents: WebContentsLike;
  isDestroyed?(): boolean;
}
/** What the relay needs from SidecarClient. */
export interface RelayClient {
  call<M extends MethodName>(method: M, params: ParamsOf<M>, options?: CallOptions): Promise<ResultOf<M>>;
  on(event: 'task.updated', listener: (p: TaskUpdatedParams) => void): () => void;
  on(event: 'task.deleted', listener: (p: TaskDeletedParams) => void): () => void;
  on(event: 'restarted', listener: (p: ReadyInfo) => void): () => void;
  on(event: 'queue.updated', listener: (p: QueueStatus) => void): () => void;
}

export interface RegisterTaskIpcOptions {
  ipcMain: IpcMainLike;
  client: RelayClient;
  /** The windows that may call and receive events (e.g. `() => BrowserWindow.getAllWindows()`). */
  getWindows: () => readonly WindowLike[];
  /** Also expose tasks.delete and tasks.prune. Default false. */
  allowDestructive?: boolean;
  /** Replace the default allow-list (system.shutdown / rpc.discover can never be listed). */
  methods?: readonly RendererMethod[];
  /**
   * Origins whose pages may call and receive events, e.g. `['http://localhost:5173']` in
   * development or `['app://bundle']` for a custom protocol. `'file://'` allows file: pages.
   * Default: `['file://']`.
   */
  allowedOrigins?: readonly string[];
  /**
   * Replace the origin check entirely (return true to allow). The window and frame checks still
   * apply. Events: called with each window's top frame (its `getURL()`, `parent` null).
   */
  validateSender?: (frame: SenderFrameLike, event: IpcMainInvokeEventLike) => boolean;
  /** Accept calls from iframes (default false: top-level frames only). */
  allowSubframes?: boolean;
  /** Per-call timeout for relayed calls (default: the client's). */
  callTimeoutMs?: number;
  logger?: (entry: LogEntry) => void;
}

export interface TaskIpcRegistration {
  /** The protocol methods now reachable from renderers. */
  readonly methods: readonly RendererMethod[];
  /** Remove the handlers and stop broadcasting. */
  dispose(): void;
}

/**
 * The live registration on each ipcMain: a second one replaces it (see registerTaskIpc). Kept on
 * the ipcMain object under a global symbol, not in a map of this module: a hot reload that runs
 * this module again (a bundled main process under HMR) must still find the earlier registration.
 */
const REGISTRATION = Symbol.for('task-sidecar/electron-bridge/registration');
type Registered = IpcMainLike & { [REGISTRATION]?: TaskIpcRegistration };
const registrations = {
  get: (ipc: IpcMainLike): TaskIpcRegistration | undefined => (ipc as Registered)[REGISTRATION],
  set: (ipc: IpcMainLike, registration: TaskIpcRegistration): void => {
    Object.defineProperty(ipc, REGISTRATION, { value: registration, configurable: true, enumerable: false, writable: true });
  },
  delete: (ipc: IpcMainLike): void => {
    delete (ipc as Registered)[REGISTRATION];
  },
};

export function registerTaskIpc(options: RegisterTaskIpcOptions): TaskIpcRegistration {
  const { ipcMain, client, getWindows } = options;
  const methods = rendererMethods({
    ...(options.methods ? { methods: options.methods } : {}),
    allowDestructive: options.allowDestructive ?? false,
  });
  const allowedOrigins = options.allowedOrigins ?? ['file://'];
  const log = (level: LogEntry['level'], message: string): void => options.logger?.({ level, source: 'bridge', message });
  // A second registration on the same ipcMain (a main-process module loaded twice, a hot reload)
  // would send every event twice and, disposed later, remove the handlers of the one that stays.
  const previous = registrations.get(ipcMain);
  if (previous) {
    log('warn', 'registerTaskIpc called again on the same ipcMain: the earlier registration is disposed');
    previous.dispose();
  }

  const refuse = (code: number, message: string, data?: JsonValue): IpcEnvelope<never> => ({
    ok: false,
    error: data === undefined ? { code, message } : { code, message, data },
  });

  const senderProblem = (event: IpcMainInvokeEventLike): string | null => {
    const frame = event.senderFrame;
    if (!frame) return 'the sender frame is gone';
    const windows = getWindows();
    const known = windows.some((w) => !(w.isDestroyed?.() ?? false) && sameContents(w.webContents, event.sender));
    if (!known) return 'the sender is not one of the app windows';
    if (!options.allowSubframes && frame.parent !== null && frame.parent !== undefined) return 'calls from subframes are not allowed';
    if (options.validateSender) return options.validateSender(frame, event) ? null : `origin of ${frame.url} refused`;
    return originAllowed(frame.url, allowedOrigins) ? null : `origin of ${frame.url} is not allowed`;
  };

  for (const method of methods) {
    const channel = channelFor(method);
    const handler = async (event: IpcMainInvokeEventLike, ...args: unknown[]): Promise<IpcEnvelope<unknown>> => {
      const problem = senderProblem(event);
      if (problem) {
        log('warn', `refused ${method} from renderer: ${problem}`);
        return refuse(ClientErrorCode.Forbidden, `${method}: refused: ${problem}`);
      }
      if (args.length > 1) return refuse(ErrorCode.InvalidParams, `${method}: expected one params object`, { field: 'params', reason: 'too many arguments' });
      const checked = validateParams(method, args[0]);
      if (!checked.ok) {
        log('warn', `refused ${method} from renderer: ${checked.field}: ${checked.reason}`);
        return refuse(ErrorCode.InvalidParams, `${checked.field}: ${checked.reason}`, { field: checked.field, reason: checked.reason });
      }
      try {
        const callOptions: CallOptions = options.callTimeoutMs !== undefined ? { timeoutMs: options.callTimeoutMs } : {};
        const result = await client.call(method, checked.params as ParamsOf<typeof method>, callOptions);
        return { ok: true, result };
      } catch (err) {
        return { ok: false, error: toShape(err) };
      }
    };
    ipcMain.removeHandler(channel);
    ipcMain.handle(channel, handler);
  }

  // Events carry every task's details and result: they go to the pages that may call, not to a
  // window that navigated to (or was opened on) another origin.
  const pageAllowed = (contents: WebContentsLike): boolean => {
    if (!contents.getURL) return true; // a stand-in that cannot say: nothing to check
    const frame: SenderFrameLike = { url: contents.getURL(), parent: null };
    if (options.validateSender) return options.validateSender(frame, { sender: contents, senderFrame: frame });
    return originAllowed(frame.url, allowedOrigins);
  };
  const broadcast = (event: TaskEvent): void => {
    for (const w of getWindows()) {
      try {
        if (w.isDestroyed?.() || w.webContents.isDestroyed?.()) continue;
        if (!pageAllowed(w.webContents)) continue;
        w.webContents.send(IPC_EVENT_CHANNEL, event);
      } catch (err) {
        log('warn', `could not send ${event.type} to a window: ${String(err)}`);
      }
    }
  };
  const unsubscribers = [
    client.on('task.updated', (params) => broadcast({ type: 'task.updated', params })),
    client.on('task.deleted', (params) => broadcast({ type: 'task.deleted', params })),
    client.on('restarted', (params) => broadcast({ type: 'restarted', params })),
    client.on('queue.updated', (params) => broadcast({ type: 'queue.updated', params })),
  ];

  let disposed = false;
  const registration: TaskIpcRegistration = {
    methods,
    dispose(): void {
      if (disposed) return;
      disposed = true;
      for (const u of unsubscribers) u();
      if (registrations.get(ipcMain) !== registration) return; // replaced: the handlers are the new one's
      registrations.delete(ipcMain);
      for (const m of methods) ipcMain.removeHandler(channelFor(m));
    },
  };
  registrations.set(ipcMain, registration);
  return registration;
}

function sameContents(a: WebContentsLike, b: WebContentsLike): boolean {
  if (a === b) return true;
  return typeof a.id === 'number' && a.id === b.id;
}

function originAllowed(url: string, allowed: readonly string[]): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol === 'file:') return allowed.includes('file://');
  // Custom schemes (app://bundle/...) have an opaque WHATWG origin: compare scheme + host instead.
  const origin = parsed.origin !== 'null' ? parsed.origin : parsed.host ? `${parsed.protocol}//${parsed.host}` : null;
  return origin !== null && allowed.includes(origin);
}

function toShape(err: unknown): SidecarErrorShape {
  if (err instanceof SidecarError) {
    return err.data === undefined ? { code: err.code, message: err.message } : { code: err.code, message: err.message, data: err.data };
  }
  return { code: ErrorCode.InternalError, message: err instanceof Error ? err.message : String(err) };
}
