/**
 * One JSON-RPC connection over a pair of byte streams (a sidecar's stdout/stdin, or in-memory
 * streams in tests).
 *
 * Framing is ours (framing.ts); request/response correlation is delegated to the `json-rpc-2.0`
 * package's `JSONRPCClient` (its pending map settles each call by the answer's id). This class
 * adds what that library leaves to the transport: writing lines with backpressure, routing each
 * incoming line (responses to the library, notifications to a callback, anything else to the
 * logger), turning error responses into `SidecarError`, per-call timeouts, AbortSignal
 * cancellation and failing every pending call when the connection closes.
 */
import type { Readable, Writable } from 'node:stream';
import {
  JSONRPCClient,
  createJSONRPCErrorResponse,
  createJSONRPCRequest,
  type JSONRPCRequest,
  type JSONRPCResponse,
} from 'json-rpc-2.0';

import { SidecarError } from './errors';
import { DEFAULT_MAX_LINE_BYTES, LineDecoder, encodeMessage, type OversizeEnds } from './framing';
import { OutgoingQueue } from './outgoing';
import { ClientErrorCode, DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, type JsonValue } from './protocol';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export interface LogEntry {
  level: LogLevel;
  /** 'stderr': a line the sidecar wrote to stderr; 'stdout': a non-protocol stdout line; 'bridge': the bridge itself. */
  source: 'stderr' | 'stdout' | 'bridge';
  message: string;
  pid?: number | undefined;
}
export type Logger = (entry: LogEntry) => void;

export interface CallOptions {
  /** Reject with ClientErrorCode.Timeout after this many ms (default: the client's `callTimeoutMs`). 0 = no timeout. */
  timeoutMs?: number;
  /** Abort waiting for the answer (ClientErrorCode.Cancelled). The request may still run in the sidecar. */
  signal?: AbortSignal;
}

export interface ConnectionOptions {
  input: Readable;
  output: Writable;
  onNotification: (method: string, params: unknown) => void;
  logger?: Logger | undefined;
  pid?: number | undefined;
  /** Longest line accepted from the peer, in bytes (default 256 MiB); a longer answer fails its call. */
  maxLineBytes?: number;
  /**
   * Longest request line the peer reads, in bytes without the newline (the sidecar's
   * `--max-message-bytes`, default 8 MiB). A longer request fails at once and is never written:
   * the sidecar would answer it with an id-less error no call can be matched to.
   */
  maxRequestBytes?: number;
}

/** The longest delay setTimeout keeps (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

/** Messages longer than this are logged only by their head. */
const LOG_PREVIEW = 300;

export class RpcConnection {
  private readonly rpc: JSONRPCClient<void>;
  private readonly decoder: LineDecoder;
  private readonly pending = new Map<number, string>();
  private nextId = 0;
  private closedError: SidecarError | null = null;
  private readonly outgoing = new OutgoingQueue();
  private waitingForDrain = false;
  private readonly maxLineBytes: number;
  private readonly maxRequestBytes: number;

  constructor(private readonly opts: ConnectionOptions) {
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.rpc = new JSONRPCClient<void>((payload: JSONRPCRequest) => this.write(payload));
    this.decoder = new LineDecoder((line) => this.onLine(line), {
      maxLineBytes: this.maxLineBytes,
      onOversize: (bytes, ends) => this.onOversize(bytes, ends),
    });
    opts.input.on('data', (chunk: Buffer | string) => this.decoder.push(chunk));
    opts.input.on('end', () => this.decoder.end());
    opts.output.on('drain', () => this.onDrain());
    opts.output.on('close', () => this.onDrain());
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  get isClosed(): boolean {
    return this.closedError !== null;
  }

  /** Send a request and wait for its result. Rejects with SidecarError. */
  async request(method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    if (this.closedError) throw this.withMethod(this.closedError, method);
    const { signal } = options;
    if (signal?.aborted) {
      throw new SidecarError(ClientErrorCode.Cancelled, `${method}: cancelled before it was sent`, abortData(signal), { method });
    }
    const id = ++this.nextId;
    const timeoutMs = options.timeoutMs ?? 0;
    const request = createJSONRPCRequest(id, method, params === undefined ? undefined : params);
    if (params === undefined) delete request.params;

    this.pending.set(id, method);
    // A timeout or an abort answers the call in the sidecar's stead, through the library, so a
    // late answer finds no pending id (route() drops it).
    const answerInstead = (code: number, message: string, data: JsonValue): void => {
      this.rpc.receive(createJSONRPCErrorResponse(id, code, message, data));
    };
    const onAbort = (): void => answerInstead(ClientErrorCode.Cancelled, `${method}: cancelled by the caller`, abortData(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    // The line is written (or queued, on a full pipe) inside this call; the timer is armed after
    // it, so its bookkeeping is not on the way of the request to the sidecar.
    const answered = this.rpc.requestAdvanced(request);
    const timer =
      timeoutMs > 0
        ? setTimeout(
            () => answerInstead(ClientErrorCode.Timeout, `${method}: no answer from the sidecar within ${timeoutMs} ms`, { method, timeoutMs }),
            // Node fires a delay past 2^31-1 ms after 1 ms: a very long timeout must not become none
            Math.min(timeoutMs, MAX_TIMER_MS),
          )
        : undefined;
    let response: JSONRPCResponse;
    try {
      response = await answered;
    } finally {
      clearTimeout(timer);
      this.pending.delete(id);
      signal?.removeEventListener('abort', onAbort);
      this.outgoing.drop(id); // aborted or timed out before it was written: never send it
    }
    if (response.error) {
      const { code, message, data } = response.error;
      throw new SidecarError(code, message, data as JsonValue | undefined, { method });
    }
    return response.result;
  }

  /** Send a notification (no answer). */
  notify(method: string, params?: unknown): void {
    if (this.closedError) return;
    const message: JSONRPCRequest = { jsonrpc: '2.0', method };
    if (params !== undefined) message.params = params;
    void this.write(message);
  }

  /**
   * Mark the connection closed: every pending call and every later call rejects with `error`.
   * Idempotent (the first error wins).
   */
  close(error: SidecarError): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const [id, method] of [...this.pending]) {
      this.rpc.receive(
        createJSONRPCErrorResponse(
          id,
          error.code,
          `${method}: ${error.message}`,
          error.data === undefined ? { method } : ({ method, ...asObject(error.data) } as JsonValue),
        ),
      );
    }
    for (const o of this.outgoing.takeAll()) this.failWrite(o.id, o.method, error.message);
  }

  private withMethod(error: SidecarError, method: string): SidecarError {
    return new SidecarError(error.code, `${method}: ${error.message}`, error.data, { method });
  }

  /**
   * The JSONRPCClient's send function. It only queues the line and returns at once: json-rpc-2.0
   * waits for `send` before it settles a request, so a send blocked on a full pipe would also
   * block that request's timeout and cancellation. The pump writes queued lines in order and
   * pauses on a full pipe until 'drain' (backpressure), so a stalled sidecar does not make Node
   * buffer without bound, and a call aborted while still queued is never sent at all.
   */
  private write(payload: JSONRPCRequest): void {
    const id = typeof payload.id === 'number' ? payload.id : undefined;
    if (this.closedError || this.opts.output.destroyed || this.opts.output.writableEnded) {
      this.failWrite(id, payload.method, this.closedError?.message ?? 'its stdin is closed');
      return;
    }
    let line: string;
    try {
      line = encodeMessage(payload);
    } catch (err) {
      if (id !== undefined) {
        this.rpc.receive(
          createJSONRPCErrorResponse(id, ErrorCode.InvalidParams, `${payload.method}: params are not JSON-serialisable: ${String(err)}`),
        );
      }
      return;
    }
    // A UTF-16 unit is at most 3 UTF-8 bytes: most lines are judged without counting their bytes.
    if ((line.length - 1) * 3 > this.maxRequestBytes) {
      const bytes = Buffer.byteLength(line, 'utf8') - 1; // without the newline, as the sidecar counts
      if (bytes > this.maxRequestBytes) {
        const why = `the request is ${bytes} bytes as one line, over the sidecar's limit of ${this.maxRequestBytes} (maxMessageBytes); it was not sent`;
        if (id === undefined) this.log('error', 'bridge', `${payload.method}: ${why}`);
        else this.rpc.receive(createJSONRPCErrorResponse(id, ErrorCode.InvalidRequest, `${payload.method}: ${why}`, { method: payload.method, bytes, limit: this.maxRequestBytes }));
        return;
      }
    }
    this.outgoing.push({ id, method: payload.method, line });
    this.pump();
  }

  private pump(): void {
    const out = this.opts.output;
    while (!this.waitingForDrain) {
      const next = this.outgoing.shift();
      if (next === undefined) break;
      if (out.destroyed || out.writableEnded) {
        this.failWrite(next.id, next.method, 'its stdin is closed');
        continue;
      }
      try {
        if (!out.write(next.line)) this.waitingForDrain = true;
      } catch (err) {
        this.failWrite(next.id, next.method, String(err));
      }
    }
  }

  private failWrite(id: number | undefined, method: string, why: string): void {
    if (id === undefined) return;
    this.rpc.receive(
      createJSONRPCErrorResponse(id, ClientErrorCode.SidecarExited, `${method}: could not write to the sidecar (${why})`, { method }),
    );
  }

  private onDrain(): void {
    this.waitingForDrain = false;
    this.pump();
  }

  /**
   * A line over maxLineBytes was dropped unread. When it answered a pending call, that call fails
   * now rather than at its timeout (or never, without one): the sidecar writes a response's "id"
   * last, other peers often first, so both ends of the line are looked at.
   */
  private onOversize(bytes: number, ends: OversizeEnds): void {
    const id = responseIdOf(ends.head.toString('latin1'), ends.tail.toString('latin1'));
    const method = id === undefined ? undefined : this.pending.get(id);
    this.log('error', 'bridge', `dropped a ${bytes}-byte line from the sidecar (over the line limit of ${this.maxLineBytes})${method ? `: the answer to ${method}` : ''}`);
    if (id === undefined || method === undefined) return;
    this.rpc.receive(
      createJSONRPCErrorResponse(
        id,
        ClientErrorCode.ResponseTooLarge,
        `${method}: the sidecar's answer is ${bytes} bytes, over the client's maxLineBytes of ${this.maxLineBytes}; it was dropped`,
        { method, bytes, limit: this.maxLineBytes },
      ),
    );
  }

  private onLine(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.log('warn', 'stdout', `non-JSON line on the protocol stream skipped: ${preview(line)}`);
      return;
    }
    if (Array.isArray(message)) {
      for (const item of message) this.route(item, line);
    } else {
      this.route(message, line);
    }
  }

  private route(message: unknown, line: string): void {
    if (typeof message !== 'object' || message === null || (message as { jsonrpc?: unknown }).jsonrpc !== '2.0') {
      this.log('warn', 'stdout', `non-JSON-RPC message skipped: ${preview(line)}`);
      return;
    }
    const m = message as { id?: unknown; method?: unknown; params?: unknown; result?: unknown; error?: unknown };
    if (typeof m.method === 'string') {
      if (m.id !== undefined && m.id !== null) {
        // The sidecar never sends requests to the client (protocol.md): log and ignore.
        this.log('warn', 'bridge', `unexpected request from the sidecar: ${m.method}`);
        return;
      }
      try {
        this.opts.onNotification(m.method, m.params);
      } catch (err) {
        this.log('error', 'bridge', `notification listener for ${m.method} threw: ${String(err)}`);
      }
      return;
    }
    if ('result' in m || 'error' in m) {
      if (m.id === null || m.id === undefined) {
        // e.g. -32700 / -32600 for a line the sidecar could not read: nothing to correlate. An
        // over-long request is refused before it is written, unless the limits disagree.
        const err = m.error as { code?: unknown; message?: unknown; data?: unknown } | undefined;
        const detail = typeof err?.data === 'string' ? ` (${err.data})` : '';
        this.log('error', 'bridge', `sidecar error without id: ${String(err?.code)} ${String(err?.message)}${detail}`);
        return;
      }
      if (typeof m.id === 'number' && !this.pending.has(m.id)) {
        this.log('debug', 'bridge', `late or unknown response id ${m.id} ignored`);
        return;
      }
      this.rpc.receive(message as JSONRPCResponse);
      return;
    }
    this.log('warn', 'stdout', `unrecognised message skipped: ${preview(line)}`);
  }

  private log(level: LogLevel, source: LogEntry['source'], message: string): void {
    this.opts.logger?.({ level, source, message, pid: this.opts.pid });
  }
}

/** A response envelope's top-level numeric id: its first member after "jsonrpc", or its last. */
const ID_FIRST = /^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(\d+)\s*[,}]/;
const ID_LAST = /[,{]\s*"id"\s*:\s*(\d+)\s*\}\s*$/;

function responseIdOf(head: string, tail: string): number | undefined {
  const m = ID_FIRST.exec(head) ?? ID_LAST.exec(tail);
  return m ? Number(m[1]) : undefined;
}

function preview(line: string): string {
  return line.length > LOG_PREVIEW ? `${line.slice(0, LOG_PREVIEW)}… (${line.length} chars)` : line;
}

function abortData(signal: AbortSignal | undefined): JsonValue {
  const reason: unknown = signal?.reason;
  return { reason: reason instanceof Error ? reason.message : reason === undefined ? null : String(reason) };
}

function asObject(data: JsonValue): Record<string, JsonValue> {
  return typeof data === 'object' && data !== null && !Array.isArray(data) ? data : { detail: data };
}
