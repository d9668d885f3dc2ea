/**
 * Renderer entry: the TaskStore (a cache of tasks kept true to the database) and the types of
 * `window.tasks`. No Node or Electron imports: usable in a sandboxed, context-isolated page.
 */
import { SidecarError, isSidecarErrorLike } from './errors';
import type { TaskApi, TaskEvent } from './ipc-contract';
import type { ListTasksParams, Task, TaskList, TaskStatus } from './protocol';

export { SidecarError, isSidecarErrorLike };
export type { SidecarErrorShape } from './errors';
export type { TaskApi, TaskEvent, DefaultRendererMethod, RendererMethod, IpcEnvelope } from './ipc-contract';
export * from './protocol';

/** What the store needs: `window.tasks` satisfies it. */
export interface TaskStoreSource {
  list(params?: ListTasksParams): Promise<TaskList>;
  onUpdate(callback: (event: TaskEvent) => void): () => void;
}

export interface TaskStoreOptions {
  /** Only keep tasks matching this filter (status / type / parentId); `limit`/`cursor` are managed by the store. */
  filter?: Omit<ListTasksParams, 'limit' | 'cursor'>;
  /** Page size for resync (default 1000, the protocol maximum). */
  pageSize?: number;
  /** Stop a resync after this many pages (default 100). */
  maxPages?: number;
  /** Called when a resync fails (the store retries on the next gap/restart or `resync()`). */
  onError?: (error: unknown) => void;
}

export interface TaskStoreSnapshot {
  /** Newest first (createdAt, then id). */
  tasks: readonly Task[];
  /** Last `seq` applied (null before the first update or right after a restart). */
  seq: number | null;
  /** Number of resyncs done (initial load included). */
  resyncs: number;
  syncing: boolean;
}

type Listener = (snapshot: TaskStoreSnapshot) => void;

/**
 * Applies `task.updated` by `version` (an older or equal version than the one held is ignored),
 * removes on `task.deleted`, and resyncs with `tasks.list` when `seq` shows a gap, when `seq` goes
 * backwards (a new sidecar process) or on a `restarted` event.
 */
export class TaskStore {
  private readonly tasks = new Map<string, Task>();
  private readonly listeners = new Set<Listener>();
  private lastSeq: number | null = null;
  private unsubscribe: (() => void) | null = null;
  private syncing: Promise<void> | null = null;
  private resyncAgain = false;
  private resyncCount = 0;
  /**
   * While a resync's pages are being fetched: the highest version an event gave for each task,
   * whether the store kept it or dropped it (it left the filter). The pages may be older than
   * those events, and must not bring back a version the store has already moved past.
   */
  private touchedDuringSync: Map<string, number> | null = null;
  private deletedDuringSync: Set<string> | null = null;
  private snapshotCache: TaskStoreSnapshot | null = null;

  constructor(
    private readonly source: TaskStoreSource,
    private readonly options: TaskStoreOptions = {},
  ) {}

  /** Subscribe to events, then load. Resolves after the first full load. */
  async start(): Promise<void> {
    if (!this.unsubscribe) this.unsubscribe = this.source.onUpdate((event) => this.handleEvent(event));
    await this.resync();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  get(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** Newest first. */
  all(): readonly Task[] {
    return this.snapshot().tasks;
  }

  children(parentId: string): Task[] {
    return this.all().filter((t) => t.parentId === parentId);
  }

  get size(): number {
    return this.tasks.size;
  }

  get seq(): number | null {
    return this.lastSeq;
  }

  snapshot(): TaskStoreSnapshot {
    if (!this.snapshotCache) {
      const tasks = [...this.tasks.values()].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
      this.snapshotCache = Object.freeze({ tasks: Object.freeze(tasks), seq: this.lastSeq, resyncs: this.resyncCount, syncing: this.syncing !== null });
    }
    return this.snapshotCache;
  }

  /** Called after every change with the new snapshot; returns unsubscribe. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Feed one event (what `onUpdate` delivers). Public for tests and custom transports. */
  handleEvent(event: TaskEvent): void {
    switch (event.type) {
      case 'task.updated': {
        const { seq, task } = event.params;
        let needResync = false;
        if (this.lastSeq !== null) {
          if (seq === this.lastSeq + 1) {
            // in order
          } else if (seq > this.lastSeq + 1) {
            needResync = true; // gap: lost messages
          } else {
            needResync = true; // went backwards: a new sidecar process
          }
        }
        this.lastSeq = seq;
        const changed = this.apply(task);
        if (changed) this.changed();
        if (needResync) this.resyncQuietly();
        return;
      }
      case 'task.deleted': {
        let changed = false;
        for (const id of event.params.ids) {
          this.deletedDuringSync?.add(id);
          changed = this.tasks.delete(id) || changed;
        }
        if (changed) this.changed();
        return;
      }
      case 'restarted': {
        this.lastSeq = null;
        this.resyncQuietly();
        return;
      }
      default:
        return; // other events (queue.updated) do not change tasks
    }
  }

  /** Reload everything with tasks.list (coalesced: concurrent calls share one run, plus one more if asked meanwhile). */
  resync(): Promise<void> {
    if (this.syncing) {
      this.resyncAgain = true;
      return this.syncing;
    }
    this.syncing = this.runResync().finally(() => {
      this.syncing = null;
      this.changed();
      if (this.resyncAgain) {
        this.resyncAgain = false;
        this.resyncQuietly();
      }
    });
    this.changed();
    return this.syncing;
  }

  /** Resync in the background; a failure goes to options.onError only. */
  private resyncQuietly(): void {
    this.resync().catch(() => undefined);
  }

  private async runResync(): Promise<void> {
    this.touchedDuringSync = new Map();
    this.deletedDuringSync = new Set();
    try {
      const fetched = new Map<string, Task>();
      const pageSize = this.options.pageSize ?? 1000;
      const maxPages = this.options.maxPages ?? 100;
      let cursor: string | null = null;
      for (let page = 0; page < maxPages; page++) {
        const params: ListTasksParams = { ...this.options.filter, limit: pageSize };
        if (cursor !== null) params.cursor = cursor;
        const res = await this.source.list(params);
        for (const t of res.tasks) fetched.set(t.id, t);
        cursor = res.nextCursor;
        if (cursor === null) break;
      }
      // Merge: the newest version wins; tasks the list no longer has are gone, unless an event
      // created/changed them while the pages were being read.
      const touched = this.touchedDuringSync;
      const deleted = this.deletedDuringSync;
      for (const id of [...this.tasks.keys()]) {
        if (!fetched.has(id) && !touched.has(id)) this.tasks.delete(id);
      }
      for (const [id, task] of fetched) {
        if (deleted.has(id)) continue;
        const seen = touched.get(id);
        if (seen !== undefined && task.version <= seen) continue; // an event already gave this version or a newer one
        const held = this.tasks.get(id);
        if (!held || task.version > held.version) this.tasks.set(id, task);
      }
      this.resyncCount += 1;
    } catch (err) {
      this.options.onError?.(err);
      throw err;
    } finally {
      this.touchedDuringSync = null;
      this.deletedDuringSync = null;
    }
  }

  /** Apply one task by version; returns whether the store changed. */
  private apply(task: Task): boolean {
    // Recorded before the filter: a task that leaves the filter during a resync must stay out
    // even though the list being fetched still has it at its older version.
    const touched = this.touchedDuringSync;
    if (touched) touched.set(task.id, Math.max(task.version, touched.get(task.id) ?? 0));
    if (!this.matches(task)) {
      return this.tasks.delete(task.id);
    }
    const held = this.tasks.get(task.id);
    if (held && held.version >= task.version) return false; // stale or duplicate
    this.tasks.set(task.id, task);
    return true;
  }

  private matches(task: Task): boolean {
    const f = this.options.filter;
    if (!f) return true;
    if (f.status && !f.status.includes(task.status as TaskStatus)) return false;
    if (f.type && !f.type.includes(task.type)) return false;
    if (f.parentId !== undefined && task.parentId !== f.parentId) return false;
    return true;
  }

  private changed(): void {
    this.snapshotCache = null;
    if (this.listeners.size === 0) return;
    const snap = this.snapshot();
    for (const l of [...this.listeners]) {
      try {
        l(snap);
      } catch {
        /* a UI listener's error must not break the store */
      }
    }
  }
}

/** `window.tasks` typed (declare it in your renderer: `declare global { interface Window { tasks: TaskApi } }`). */
export function getTaskApi<T = TaskApi>(key = 'tasks'): T {
  const api = (globalThis as Record<string, unknown>)[key];
  if (!api) throw new Error(`window.${key} is missing: call exposeTaskApi() in the preload script`);
  return api as T;
}
