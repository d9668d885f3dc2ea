/**
 * Preload entry: `exposeTaskApi({contextBridge, ipcRenderer})` puts `window.tasks` in the page.
 *
 * The page gets one function per allowed method (named after it) and `onUpdate(cb)`; never
 * `ipcRenderer` itself, nor the IPC event object. Errors: the relay answers with an envelope
 * (Electron's `invoke` would drop `code`/`data` of a thrown error), and the page-side wrapper
 * rethrows a `SidecarError {name, code, message, data}`.
 *
 * Where the wrapper runs: contextBridge copies an Error thrown from the isolated world without its
 * custom properties, so the wrapper is installed *in the page's own world* with
 * `contextBridge.executeInMainWorld` (Electron >= 35) and throws the error there. On older
 * Electron the API is exposed with `exposeInMainWorld` and errors keep only their message (the
 * code is put in front of it: "[-32001] task not found").
 *
 * This module imports only pure data (no Node built-ins); with `sandbox: true` bundle your preload.
 */
import {
  IPC_EVENT_CHANNEL,
  apiNameOf,
  channelFor,
  rendererMethods,
  type DefaultRendererMethod,
  type IpcEnvelope,
  type RendererMethod,
  type TaskApi,
  type TaskEvent,
} from './ipc-contract';

export type { TaskApi, TaskEvent } from './ipc-contract';

export interface ContextBridgeLike {
  exposeInMainWorld(apiKey: string, api: unknown): void;
  executeInMainWorld?(script: { func: (...args: never[]) => unknown; args?: unknown[] }): unknown;
}
export interface IpcRendererLike {
  invoke(channel: string, ...args: unknown[]): Promise<unknown>;
  on(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
  removeListener(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
}

export interface ExposeTaskApiOptions<M extends RendererMethod> {
  contextBridge: ContextBridgeLike;
  ipcRenderer: IpcRendererLike;
  /** Must match what main registered (registerTaskIpc). Default: the default allow-list. */
  methods?: readonly M[];
  allowDestructive?: boolean;
  /** `window[key]`; default 'tasks'. */
  key?: string;
}

/** The isolated-world half: functions answering envelopes, and the event subscription. */
interface RawApi {
  [name: string]: unknown;
}

export function exposeTaskApi<M extends RendererMethod = DefaultRendererMethod>(
  options: ExposeTaskApiOptions<M>,
): { key: string; methods: readonly M[] } {
  const { contextBridge, ipcRenderer } = options;
  const key = options.key ?? 'tasks';
  const methods = rendererMethods({
    ...(options.methods ? { methods: options.methods } : {}),
    allowDestructive: options.allowDestructive ?? false,
  }) as M[];
  const names = methods.map((m) => apiNameOf(m));

  const raw: RawApi = {};
  methods.forEach((method, i) => {
    const channel = channelFor(method);
    // Exactly one argument is forwarded: extra arguments from the page are dropped here.
    raw[names[i]!] = (params?: unknown): Promise<unknown> => ipcRenderer.invoke(channel, params);
  });
  raw['onUpdate'] = (callback: (event: TaskEvent) => void): (() => void) => {
    if (typeof callback !== 'function') throw new TypeError('onUpdate(callback): callback must be a function');
    // Never hand the page the IpcRendererEvent (it reaches ipcRenderer through event.sender).
    const listener = (_event: unknown, payload: unknown): void => callback(payload as TaskEvent);
    ipcRenderer.on(IPC_EVENT_CHANNEL, listener);
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      ipcRenderer.removeListener(IPC_EVENT_CHANNEL, listener);
    };
  };

  if (typeof contextBridge.executeInMainWorld === 'function') {
    contextBridge.executeInMainWorld({ func: installTaskApi as (...args: never[]) => unknown, args: [key, raw, names, methods] });
  } else {
    contextBridge.exposeInMainWorld(key, legacyApi(raw, names, methods));
  }
  return { key, methods };
}

/**
 * Runs in the page's world (serialised by executeInMainWorld): must not use anything from this
 * module's scope. Builds `window[key]` over the raw functions, unwrapping envelopes.
 */
function installTaskApi(key: string, raw: RawApi, names: string[], methods: string[]): boolean {
  class SidecarError extends Error {
    code: number;
    data: unknown;
    method: string | undefined;
    constructor(shape: { code: number; message: string; data?: unknown }, method?: string) {
      super(shape.message);
      this.name = 'SidecarError';
      this.code = shape.code;
      this.data = shape.data;
      this.method = method;
    }
  }
  const api: Record<string, unknown> = {};
  names.forEach((name, i) => {
    const call = raw[name] as (params?: unknown) => Promise<unknown>;
    const method = methods[i];
    api[name] = async (params?: unknown): Promise<unknown> => {
      const envelope = (await call(params)) as IpcEnvelope<unknown> | undefined;
      if (envelope && envelope.ok === true) return envelope.result;
      const error = envelope && envelope.ok === false && envelope.error ? envelope.error : { code: -32603, message: 'malformed answer from the main process' };
      throw new SidecarError(error, method);
    };
  });
  const onUpdate = raw['onUpdate'] as (cb: (e: unknown) => void) => () => void;
  api['onUpdate'] = (callback: (e: unknown) => void): (() => void) => onUpdate(callback);
  api['methods'] = Object.freeze(methods.slice());
  Object.freeze(api);
  Object.defineProperty(globalThis, key, { value: api, enumerable: true, configurable: false, writable: false });
  return true;
}

/** Electron < 35: errors cross the bridge with only their message. */
function legacyApi(raw: RawApi, names: string[], methods: string[]): Record<string, unknown> {
  const api: Record<string, unknown> = {};
  names.forEach((name, i) => {
    const call = raw[name] as (params?: unknown) => Promise<IpcEnvelope<unknown>>;
    api[name] = async (params?: unknown): Promise<unknown> => {
      const envelope = await call(params);
      if (envelope && envelope.ok === true) return envelope.result;
      const error = envelope && envelope.ok === false ? envelope.error : { code: -32603, message: 'malformed answer from the main process' };
      const e = new Error(`[${error.code}] ${error.message}`) as Error & { code: number; data: unknown; method: string | undefined };
      e.name = 'SidecarError';
      e.code = error.code;
      e.data = error.data;
      e.method = methods[i];
      throw e;
    };
  });
  api['onUpdate'] = raw['onUpdate'];
  api['methods'] = methods.slice();
  return api;
}

/** For typing `window.tasks` in the page: `declare global { interface Window { tasks: TaskApi } }`. */
export type { DefaultRendererMethod, RendererMethod };
export type ExposedTaskApi<M extends RendererMethod = DefaultRendererMethod> = TaskApi<M>;
