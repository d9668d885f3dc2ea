/**
 * Stand-ins for the Electron objects the relay and preload touch: ipcMain, webContents,
 * BrowserWindow, ipcRenderer and contextBridge (the page's "main world" is a separate vm realm).
 * Values crossing processes are structured-cloned, as Electron's IPC does.
 */
import * as vm from 'node:vm';

import type { IpcMainInvokeEventLike, RelayClient, SenderFrameLike } from '../src/relay';
import type { MethodName, ParamsOf, ResultOf } from '../src/protocol';
import type { CallOptions } from '../src/connection';

type Handler = (event: IpcMainInvokeEventLike, ...args: unknown[]) => unknown;

export class FakeIpcMain {
  readonly handlers = new Map<string, Handler>();
  handle(channel: string, listener: Handler): void {
    if (this.handlers.has(channel)) throw new Error(`Attempted to register a second handler for '${channel}'`);
    this.handlers.set(channel, listener);
  }
  removeHandler(channel: string): void {
    this.handlers.delete(channel);
  }
  async invoke(event: IpcMainInvokeEventLike, channel: string, ...args: unknown[]): Promise<unknown> {
    const h = this.handlers.get(channel);
    if (!h) throw new Error(`Error invoking remote method '${channel}': Error: No handler registered for '${channel}'`);
    const result = await h(event, ...structuredClone(args));
    return structuredClone(result);
  }
}

let nextContentsId = 1;
export class FakeWebContents {
  readonly id = nextContentsId++;
  readonly sent: Array<{ channel: string; args: unknown[] }> = [];
  destroyed = false;
  /** The page it shows (webContents.getURL). */
  url = 'file:///app/index.html';
  /** The renderer side of this page (set by FakeIpcRenderer). */
  renderer: FakeIpcRenderer | null = null;
  getURL(): string {
    return this.url;
  }
  send(channel: string, ...args: unknown[]): void {
    if (this.destroyed) throw new Error('Object has been destroyed');
    const cloned = structuredClone(args);
    this.sent.push({ channel, args: cloned });
    this.renderer?.deliver(channel, cloned);
  }
  isDestroyed(): boolean {
    return this.destroyed;
  }
}

export class FakeWindow {
  readonly webContents = new FakeWebContents();
  destroyed = false;
  isDestroyed(): boolean {
    return this.destroyed;
  }
}

type RendererListener = (event: unknown, ...args: unknown[]) => void;

/** The preload's ipcRenderer for one page (window + frame). */
export class FakeIpcRenderer {
  private readonly listeners = new Map<string, Set<RendererListener>>();
  /** What an IpcRendererEvent carries; must never reach the page. */
  static readonly SECRET_EVENT = { sender: { secret: 'ipcRenderer' }, senderId: 0 };
  frame: SenderFrameLike | null;

  constructor(
    private readonly ipcMain: FakeIpcMain,
    private readonly contents: FakeWebContents,
    url = 'file:///app/index.html',
  ) {
    contents.renderer = this;
    this.frame = { url, parent: null };
  }
  invoke(channel: string, ...args: unknown[]): Promise<unknown> {
    return this.ipcMain.invoke({ sender: this.contents, senderFrame: this.frame }, channel, ...args);
  }
  on(channel: string, listener: RendererListener): this {
    let set = this.listeners.get(channel);
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(listener);
    return this;
  }
  removeListener(channel: string, listener: RendererListener): this {
    this.listeners.get(channel)?.delete(listener);
    return this;
  }
  listenerCount(channel: string): number {
    return this.listeners.get(channel)?.size ?? 0;
  }
  deliver(channel: string, args: unknown[]): void {
    for (const l of this.listeners.get(channel) ?? []) l(FakeIpcRenderer.SECRET_EVENT, ...args);
  }
}

/** contextBridge whose main world is a separate vm realm (so nothing leaks by reference to module scope). */
export class FakeContextBridge {
  readonly mainWorld: vm.Context & Record<string, unknown>;
  exposed: Record<string, unknown> = {};
  constructor(readonly withExecuteInMainWorld = true) {
    this.mainWorld = vm.createContext({}) as vm.Context & Record<string, unknown>;
    if (!withExecuteInMainWorld) (this as { executeInMainWorld?: unknown }).executeInMainWorld = undefined;
  }
  exposeInMainWorld(apiKey: string, api: unknown): void {
    this.exposed[apiKey] = api;
    this.mainWorld[apiKey] = api;
  }
  executeInMainWorld(script: { func: (...args: never[]) => unknown; args?: unknown[] }): unknown {
    // Electron serialises the function's source and runs it in the other world.
    const fn = vm.runInContext(`(${script.func.toString()})`, this.mainWorld) as (...a: unknown[]) => unknown;
    return fn(...(script.args ?? []));
  }
  /** `window` of the page. */
  get window(): Record<string, unknown> {
    return vm.runInContext('globalThis', this.mainWorld) as Record<string, unknown>;
  }
}

/** A scriptable RelayClient. */
export class FakeClient implements RelayClient {
  readonly calls: Array<{ method: string; params: unknown }> = [];
  answer: (method: string, params: unknown) => unknown = () => null;
  private readonly listeners = new Map<string, Set<(p: never) => void>>();
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, _options?: CallOptions): Promise<ResultOf<M>> {
    this.calls.push({ method, params });
    return (await this.answer(method, params)) as ResultOf<M>;
  }
  on(event: string, listener: (p: never) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }
  emit(event: string, payload: unknown): void {
    for (const l of this.listeners.get(event) ?? []) (l as (p: unknown) => void)(payload);
  }
  listenerCount(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }
}
