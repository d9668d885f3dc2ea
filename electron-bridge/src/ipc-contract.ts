/**
 * What main (relay) and preload agree on: channel names, which methods a renderer may reach, how
 * they are named on `window.tasks`, the envelope that carries errors across `invoke`, and the
 * events pushed to windows. Pure data and types: safe to import from a preload script.
 */
import type { SidecarErrorShape } from './errors';
import {
  METHOD_SPECS,
  type MethodName,
  type ParamsOf,
  type QueueStatus,
  type ReadyInfo,
  type ResultOf,
  type TaskDeletedParams,
  type TaskUpdatedParams,
} from './protocol';

export const IPC_CHANNEL_PREFIX = 'task-sidecar:';
/** main → renderer pushes (TaskEvent). */
export const IPC_EVENT_CHANNEL = 'task-sidecar:event';

export function channelFor(method: RendererMethod): string {
  return IPC_CHANNEL_PREFIX + method;
}

/** Methods a renderer can ever be given (system.shutdown and rpc.discover never). */
export type RendererMethod = {
  [M in MethodName]: (typeof METHOD_SPECS)[M] extends { internal: true } ? never : M;
}[MethodName];
export const RENDERER_METHODS = (Object.keys(METHOD_SPECS) as MethodName[]).filter(
  (m) => !METHOD_SPECS[m].internal,
) as RendererMethod[];

/** Task reads and user actions: what `registerTaskIpc` / `exposeTaskApi` expose by default. */
export const DEFAULT_RENDERER_METHODS = [
  'tasks.create',
  'tasks.createMany',
  'tasks.get',
  'tasks.list',
  'tasks.stats',
  'tasks.tree',
  'tasks.cancel',
  'tasks.retry',
  'tasks.pause',
  'tasks.resume',
] as const satisfies readonly RendererMethod[];
export type DefaultRendererMethod = (typeof DEFAULT_RENDERER_METHODS)[number];

/** Added when the app opts in (`allowDestructive: true`). */
export const DESTRUCTIVE_RENDERER_METHODS = ['tasks.delete', 'tasks.prune'] as const satisfies readonly RendererMethod[];
export type DestructiveRendererMethod = (typeof DESTRUCTIVE_RENDERER_METHODS)[number];

export function rendererMethods(options: { methods?: readonly RendererMethod[]; allowDestructive?: boolean } = {}): RendererMethod[] {
  const base: RendererMethod[] = options.methods
    ? [...options.methods]
    : [...DEFAULT_RENDERER_METHODS, ...(options.allowDestructive ? DESTRUCTIVE_RENDERER_METHODS : [])];
  for (const m of base) {
    if (!(RENDERER_METHODS as string[]).includes(m)) throw new Error(`method ${String(m)} cannot be exposed to renderers`);
    if (!options.allowDestructive && METHOD_SPECS[m].destructive) {
      throw new Error(`method ${m} is destructive: pass allowDestructive: true to expose it`);
    }
  }
  return [...new Set(base)];
}

/** `tasks.create` → `create`, `queue.setConcurrency` → `queueSetConcurrency`, `system.ping` → `systemPing`. */
export type ApiNameOf<M extends string> = M extends `tasks.${infer R}`
  ? R
  : M extends `queue.${infer R}`
    ? `queue${Capitalize<R>}`
    : M extends `system.${infer R}`
      ? `system${Capitalize<R>}`
      : never;

export function apiNameOf<M extends RendererMethod>(method: M): ApiNameOf<M> {
  const dot = method.indexOf('.');
  const ns = method.slice(0, dot);
  const rest = method.slice(dot + 1);
  const name = ns === 'tasks' ? rest : ns + rest.charAt(0).toUpperCase() + rest.slice(1);
  return name as ApiNameOf<M>;
}

/** The answer of every relay handler: Electron's invoke would drop `code`/`data` of a thrown error. */
export type IpcEnvelope<T> = { ok: true; result: T } | { ok: false; error: SidecarErrorShape };

/** Pushed to every window on IPC_EVENT_CHANNEL. */
export type TaskEvent =
  | { type: 'task.updated'; params: TaskUpdatedParams }
  | { type: 'task.deleted'; params: TaskDeletedParams }
  /** A new sidecar replaced one that died: updates may have been lost, resync. */
  | { type: 'restarted'; params: ReadyInfo }
  /** Queue switches or limits changed. */
  | { type: 'queue.updated'; params: QueueStatus };

type ApiFunction<M extends MethodName> = ParamsOf<M> extends undefined
  ? () => Promise<ResultOf<M>>
  : {} extends ParamsOf<M>
    ? (params?: ParamsOf<M>) => Promise<ResultOf<M>>
    : (params: ParamsOf<M>) => Promise<ResultOf<M>>;

/** `window.tasks`: one function per allowed method, named after it, plus `onUpdate`. */
export type TaskApi<M extends RendererMethod = DefaultRendererMethod> = {
  readonly [K in M as ApiNameOf<K>]: ApiFunction<K>;
} & {
  /** Subscribe to task events; returns the unsubscribe function. */
  onUpdate(callback: (event: TaskEvent) => void): () => void;
  /** The protocol methods this API exposes. */
  readonly methods: readonly M[];
};
