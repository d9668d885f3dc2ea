/**
 * The task-sidecar wire protocol (protocolVersion "1"), defined once.
 *
 * Everything else in the package (client methods, IPC relay, preload API, renderer store, the
 * renderer-input validators and the check against the sidecar's OpenRPC document) derives from
 * the two tables in this file: `Methods` (types) and `METHOD_SPECS` (the same table at run time).
 * The compiler keeps them in step: every param of every method in `Methods` must have exactly one
 * field spec in `METHOD_SPECS`, and no spec may name a param the type does not have.
 *
 * Source of truth: docs/protocol.md (core, issue 3) and issue 4 (task graphs). Methods and params
 * marked `graph` come from issue 4 and may not be implemented by a given sidecar yet.
 */

export const PROTOCOL_VERSION = '1' as const;

// ---------------------------------------------------------------------------------------------
// JSON values and the Task object
// ---------------------------------------------------------------------------------------------

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export const TASK_STATUSES = [
  'QUEUED',
  'WAITING',
  'RUNNING',
  'PAUSED',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export const TERMINAL_STATUSES = ['COMPLETED', 'FAILED', 'CANCELLED'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

export function isTerminalStatus(status: TaskStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** A task as the sidecar reports it. All fields are always present (null when unset). */
export interface Task {
  id: string;
  type: string;
  status: TaskStatus;
  parentId: string | null;
  /** 0-100; COMPLETED implies 100. */
  progress: number;
  message: string | null;
  details: JsonObject;
  result: JsonValue;
  error: string | null;
  priority: number;
  attempt: number;
  maxAttempts: number;
  /** epoch ms */
  runAt: number;
  idempotencyKey: string | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  completedAt: number | null;
  /** +1 on every change of any other field: the order of updates for one task. */
  version: number;
  /** graph (issue 4): ids this task waits for ([] when none). */
  dependsOn: string[];
  /** graph (issue 4): what a failed child does to this task as a parent. */
  onChildFailure: ChildFailurePolicy;
  /** graph (issue 4): this task's weight in its parent's aggregate progress. */
  weight: number;
}

export type ChildFailurePolicy = 'fail' | 'continue';

/** The fields of `Task`, at run time (used to check the sidecar's OpenRPC Task schema). */
export const TASK_FIELDS = [
  'id',
  'type',
  'status',
  'parentId',
  'progress',
  'message',
  'details',
  'result',
  'error',
  'priority',
  'attempt',
  'maxAttempts',
  'runAt',
  'idempotencyKey',
  'createdAt',
  'updatedAt',
  'startedAt',
  'completedAt',
  'version',
  'dependsOn',
  'onChildFailure',
  'weight',
] as const satisfies readonly (keyof Task)[];
type _TaskFieldsComplete = AssertSameKeys<Task, (typeof TASK_FIELDS)[number]>;
const _taskFieldsComplete: _TaskFieldsComplete = true;
void _taskFieldsComplete;

export type StatusCounts = Partial<Record<TaskStatus, number>>;

/** `tasks.tree` node (whole subtree) / `tasks.get {include: ["children"]}` (direct children only). */
export interface TaskTreeNode extends Task {
  children?: TaskTreeNode[];
  childCounts?: StatusCounts;
}

// ---------------------------------------------------------------------------------------------
// Params and results
// ---------------------------------------------------------------------------------------------

export interface CreateTaskParams {
  type: string;
  details?: JsonObject;
  parentId?: string | null;
  priority?: number;
  maxAttempts?: number;
  /** epoch ms */
  runAt?: number;
  idempotencyKey?: string | null;
  /** graph: ids (or refs within one createMany) that must be COMPLETED before this task runs. */
  dependsOn?: string[];
  /** graph: what a failed child does to this parent (default "fail"). */
  onChildFailure?: ChildFailurePolicy;
  /** graph: weight in the parent's aggregate progress (> 0, default 1). */
  weight?: number;
}

/** A `tasks.createMany` item: create params plus `ref`. */
export interface CreateManyItem extends CreateTaskParams {
  /** graph: a client-side name that `parentId` / `dependsOn` of other items of the same call may use. */
  ref?: string;
}

export interface IdParams {
  id: string;
}

export interface GetTaskParams {
  id: string;
  /** graph: `["children"]` returns the subtree. */
  include?: 'children'[];
}

export interface ListTasksParams {
  status?: TaskStatus[];
  type?: string[];
  parentId?: string;
  /** 1-1000, default 50 */
  limit?: number;
  /** nextCursor of the previous page (null = first page) */
  cursor?: string | null;
}

export interface PruneParams {
  /** Only tasks that finished more than this many ms ago; 0 or absent: every finished task, even one that finished just now. */
  olderThanMs?: number;
  /** Which terminal statuses to remove; absent: all of them. */
  statuses?: TerminalStatus[];
}

export interface QueueScopeParams {
  /** one task type; omitted = every type */
  type?: string;
}

export interface SetConcurrencyParams {
  /** one task type; omitted = the global limit */
  type?: string;
  /** 1-256; null = back to the default */
  limit: number | null;
}

export interface HandlerInfo {
  type: string;
  /** per-type limit; null = only the global limit applies */
  concurrency: number | null;
  maxAttempts: number;
  timeoutS: number | null;
  detailsSchema: JsonObject | null;
}

export interface SystemInfo {
  version: string;
  protocolVersion: string;
  pid: number;
  dbPath: string;
  /** extension (not in docs/protocol.md): the global concurrency limit */
  concurrency?: number;
  handlers: HandlerInfo[];
}

export interface TaskList {
  tasks: Task[];
  nextCursor: string | null;
}

export interface TaskStats {
  total: number;
  byStatus: StatusCounts;
  byType: Record<string, StatusCounts>;
}

/** Claiming switches and limits in force (queue.* results). */
export interface QueueStatus {
  /** claiming stopped for every type */
  paused: boolean;
  /** types whose claiming is stopped */
  pausedTypes: string[];
  /** global limit */
  concurrency: number;
  /** per-type limits set at run time */
  typeConcurrency: Record<string, number>;
}

/** An OpenRPC document (only the parts the bridge reads are typed). */
export interface OpenRpcDocument {
  openrpc: string;
  /** task-sidecar extension: the notifications it sends. */
  'x-notifications'?: Array<{ name: string; summary?: string; params?: JsonValue }>;
  info?: { title?: string; version?: string };
  methods: Array<{
    name: string;
    params?: Array<{ name: string; required?: boolean; schema?: JsonValue }>;
    result?: { name?: string; schema?: JsonValue };
    errors?: Array<{ code: number; message: string }>;
    paramStructure?: string;
  }>;
  components?: { schemas?: Record<string, JsonValue>; [key: string]: JsonValue | undefined };
}

/** Marker for methods without params (the client sends no `params` member). */
export type NoParams = undefined;

/** Every protocol method: params and result. */
export interface Methods {
  'system.ping': { params: NoParams; result: 'pong' };
  'system.info': { params: NoParams; result: SystemInfo };
  'system.shutdown': { params: NoParams; result: null };
  'tasks.create': { params: CreateTaskParams; result: Task };
  'tasks.createMany': { params: { tasks: CreateManyItem[] }; result: { tasks: Task[] } };
  'tasks.get': { params: GetTaskParams; result: TaskTreeNode };
  'tasks.list': { params: ListTasksParams; result: TaskList };
  'tasks.stats': { params: NoParams; result: TaskStats };
  'tasks.cancel': { params: IdParams; result: Task };
  'tasks.retry': { params: IdParams; result: Task };
  'tasks.delete': { params: IdParams; result: { deleted: number } };
  'tasks.prune': { params: PruneParams; result: { deleted: number } };
  // graph methods (issue 4)
  'tasks.tree': { params: IdParams; result: TaskTreeNode };
  'tasks.pause': { params: IdParams; result: Task };
  'tasks.resume': { params: IdParams; result: Task };
  'queue.pause': { params: QueueScopeParams; result: QueueStatus };
  'queue.resume': { params: QueueScopeParams; result: QueueStatus };
  'queue.setConcurrency': { params: SetConcurrencyParams; result: QueueStatus };
  'queue.status': { params: NoParams; result: QueueStatus };
  // protocol description
  'rpc.discover': { params: NoParams; result: OpenRpcDocument };
}

export type MethodName = keyof Methods;
export type ParamsOf<M extends MethodName> = Methods[M]['params'];
export type ResultOf<M extends MethodName> = Methods[M]['result'];

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

export interface ReadyInfo {
  version: string;
  protocolVersion: string;
  pid: number;
  dbPath: string;
  /** What start-up recovery did with the tasks a crash left RUNNING (`cancelled`/`paused`: the
   * user had asked so and the handler had not stopped yet); `movedAside`: where a corrupt database
   * was moved (with `--move-aside-corrupt-db`). */
  recovered: { requeued: number; failed: number; cancelled?: number; paused?: number; movedAside?: string };
}

export interface TaskUpdatedParams {
  /** 1 per process, +1 per task.updated: a gap means a lost message. */
  seq: number;
  task: Task;
}

export interface TaskDeletedParams {
  ids: string[];
}

export interface Notifications {
  'sidecar.ready': ReadyInfo;
  'task.updated': TaskUpdatedParams;
  'task.deleted': TaskDeletedParams;
  /** after queue.* changes (graph issue) */
  'queue.updated': QueueStatus;
}
export type NotificationName = keyof Notifications;

/** The params fields of each notification, at run time (checked against the OpenRPC x-notifications). */
export const NOTIFICATION_FIELDS = {
  'sidecar.ready': ['version', 'protocolVersion', 'pid', 'dbPath', 'recovered'],
  'task.updated': ['seq', 'task'],
  'task.deleted': ['ids'],
  'queue.updated': ['paused', 'pausedTypes', 'concurrency', 'typeConcurrency'],
} as const satisfies { readonly [N in NotificationName]: readonly (keyof Notifications[N])[] };
const _notificationFieldsComplete: {
  [N in NotificationName]: AssertSameKeys<Notifications[N], (typeof NOTIFICATION_FIELDS)[N][number]>;
} = { 'sidecar.ready': true, 'task.updated': true, 'task.deleted': true, 'queue.updated': true };
void _notificationFieldsComplete;

// ---------------------------------------------------------------------------------------------
// Error codes
// ---------------------------------------------------------------------------------------------

/** Codes the sidecar answers with (docs/protocol.md "Errors"). */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  TaskNotFound: -32001,
  InvalidTransition: -32002,
  UnknownTaskType: -32003,
  DependencyCycle: -32004,
  ShuttingDown: -32005,
  StorageError: -32006,
} as const;

/**
 * Codes the bridge itself produces (never sent by the sidecar). They sit outside the JSON-RPC
 * reserved range used by the sidecar so they cannot be confused with its answers.
 */
export const ClientErrorCode = {
  /** The caller's AbortSignal fired (same value as LSP's RequestCancelled). */
  Cancelled: -32800,
  /** No response within the per-call timeout. */
  Timeout: -32801,
  /** The sidecar process exited (or its pipe broke) while the call was pending. */
  SidecarExited: -32802,
  /** The client is closed or never started; the call was not sent. */
  NotRunning: -32803,
  /** The sidecar did not become ready (start timeout, early exit, restart given up). */
  StartFailed: -32804,
  /** Renderer IPC only: the sender frame failed the origin check. */
  Forbidden: -32805,
  /** Renderer IPC only: the method is not on the relay's allow-list. */
  NotAllowed: -32806,
  /** The sidecar's answer was longer than the client's `maxLineBytes`: it was dropped unread. */
  ResponseTooLarge: -32807,
} as const;

/** The sidecar's default `--max-message-bytes`: the longest request line it reads (without the newline). */
export const DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Run-time method table
// ---------------------------------------------------------------------------------------------

/** A small, dependency-free description of one param, used to validate untrusted input. */
export type FieldSpec =
  | { kind: 'string'; optional?: boolean; nullable?: boolean; maxLength?: number; minLength?: number }
  | { kind: 'integer'; optional?: boolean; nullable?: boolean; min?: number; max?: number }
  | { kind: 'number'; optional?: boolean; min?: number; max?: number; exclusiveMin?: number }
  | { kind: 'enum'; optional?: boolean; values: readonly string[] }
  /** `minLength` / `maxLength` apply to each item. */
  | { kind: 'stringArray'; optional?: boolean; maxItems?: number; minItems?: number; minLength?: number; maxLength?: number; values?: readonly string[] }
  | { kind: 'jsonObject'; optional?: boolean; maxBytes?: number }
  | { kind: 'objectArray'; optional?: boolean; minItems?: number; maxItems?: number; item: ParamsSpec };

export type ParamsSpec = { readonly [key: string]: FieldSpec };

/** One spec per param key of T: no key missing, no key extra. */
type SpecFor<T> = T extends undefined ? null : { readonly [K in keyof Required<T>]: FieldSpec };

export interface MethodSpec<M extends MethodName> {
  /** Field specs for the params object, or null for a method without params. */
  params: SpecFor<ParamsOf<M>>;
  /** From issue 4 (task graphs): typed here, possibly not implemented by a given sidecar yet. */
  graph?: boolean;
  /** Changes or removes data irreversibly: only exposed to renderers when the app opts in. */
  destructive?: boolean;
  /** Never reachable from a renderer. */
  internal?: boolean;
}

/*
 * Constraints are the sidecar's own (its rpc.discover schemas): a renderer's params the sidecar
 * would refuse are refused here already. checkAgainstOpenRpc compares them, so drift fails a test.
 * A cap the sidecar does not state (details' size, a few maxItems) is the bridge's own, on
 * renderer input only.
 */
const ID: FieldSpec = { kind: 'string', minLength: 1, maxLength: 200 };
const MAX_DETAILS_BYTES = 1024 * 1024;
/** The latest epoch ms the sidecar accepts (its MAX_MS: 9999-12-31T23:59:59.999Z). */
const MAX_EPOCH_MS = 253_402_300_799_999;
/** A task type as `queue.*` params name it. */
const QUEUE_TYPE: FieldSpec = { kind: 'string', optional: true, minLength: 1, maxLength: 200 };

const CREATE_SPEC: { readonly [K in keyof Required<CreateTaskParams>]: FieldSpec } = {
  type: { kind: 'string', minLength: 1, maxLength: 200 },
  details: { kind: 'jsonObject', optional: true, maxBytes: MAX_DETAILS_BYTES },
  parentId: { ...ID, optional: true, nullable: true },
  priority: { kind: 'integer', optional: true, min: -1_000_000, max: 1_000_000 },
  maxAttempts: { kind: 'integer', optional: true, min: 1, max: 1000 },
  runAt: { kind: 'integer', optional: true, min: 0, max: MAX_EPOCH_MS },
  idempotencyKey: { kind: 'string', optional: true, nullable: true, minLength: 1, maxLength: 500 },
  dependsOn: { kind: 'stringArray', optional: true, maxItems: 10_000, minLength: 1, maxLength: 200 },
  onChildFailure: { kind: 'enum', optional: true, values: ['fail', 'continue'] },
  weight: { kind: 'number', optional: true, exclusiveMin: 0, max: 1_000_000 },
};

const CREATE_MANY_ITEM_SPEC: { readonly [K in keyof Required<CreateManyItem>]: FieldSpec } = {
  ...CREATE_SPEC,
  ref: { kind: 'string', optional: true, minLength: 1, maxLength: 200 },
};

/** Params of `tasks.create` that come from issue 4 (graphs), not the core protocol. */
export const GRAPH_CREATE_PARAMS: readonly (keyof CreateManyItem)[] = ['ref', 'dependsOn', 'onChildFailure', 'weight'];
/** Task fields that come from issue 4 (graphs). */
export const GRAPH_TASK_FIELDS: readonly (keyof Task)[] = ['dependsOn', 'onChildFailure', 'weight'];

export const METHOD_SPECS: { readonly [M in MethodName]: MethodSpec<M> } = {
  'system.ping': { params: null },
  'system.info': { params: null },
  'system.shutdown': { params: null, internal: true },
  'tasks.create': { params: CREATE_SPEC },
  'tasks.createMany': {
    params: { tasks: { kind: 'objectArray', minItems: 1, maxItems: 10_000, item: CREATE_MANY_ITEM_SPEC } },
  },
  'tasks.get': {
    params: { id: ID, include: { kind: 'stringArray', optional: true, values: ['children'], maxItems: 1 } },
  },
  'tasks.list': {
    params: {
      status: { kind: 'stringArray', optional: true, values: TASK_STATUSES, maxItems: TASK_STATUSES.length },
      type: { kind: 'stringArray', optional: true, maxItems: 1000, maxLength: 200 },
      parentId: { ...ID, optional: true },
      limit: { kind: 'integer', optional: true, min: 1, max: 1000 },
      cursor: { kind: 'string', optional: true, nullable: true, maxLength: 200 },
    },
  },
  'tasks.stats': { params: null },
  'tasks.cancel': { params: { id: ID } },
  'tasks.retry': { params: { id: ID } },
  'tasks.delete': { params: { id: ID }, destructive: true },
  'tasks.prune': {
    params: {
      olderThanMs: { kind: 'integer', optional: true, min: 0, max: MAX_EPOCH_MS },
      statuses: { kind: 'stringArray', optional: true, values: TERMINAL_STATUSES, minItems: 1, maxItems: TERMINAL_STATUSES.length },
    },
    destructive: true,
  },
  'tasks.tree': { params: { id: ID }, graph: true },
  'tasks.pause': { params: { id: ID }, graph: true },
  'tasks.resume': { params: { id: ID }, graph: true },
  'queue.pause': { params: { type: QUEUE_TYPE }, graph: true },
  'queue.resume': { params: { type: QUEUE_TYPE }, graph: true },
  'queue.setConcurrency': {
    params: {
      type: QUEUE_TYPE,
      limit: { kind: 'integer', nullable: true, min: 1, max: 256 },
    },
    graph: true,
  },
  'queue.status': { params: null, graph: true },
  'rpc.discover': { params: null, internal: true },
};

export const METHOD_NAMES = Object.keys(METHOD_SPECS) as MethodName[];

// ---------------------------------------------------------------------------------------------
// Compile-time helpers
// ---------------------------------------------------------------------------------------------

/** `true` when K is exactly the key set of T, else `false` (used for compile-time checks). */
export type AssertSameKeys<T, K extends PropertyKey> = [Exclude<keyof T, K>] extends [never]
  ? [Exclude<K, keyof T>] extends [never]
    ? true
    : false
  : false;
