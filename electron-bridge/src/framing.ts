/**
 * Newline-delimited framing (one JSON-RPC message per line, UTF-8, "\n", a trailing "\r" tolerated).
 *
 * Bytes are buffered and split on 0x0A before decoding. 0x0A never occurs inside a multi-byte
 * UTF-8 sequence, so a character split across chunks is decoded whole. Chunks of a long line are
 * kept in a list and joined once when its newline arrives (no quadratic re-copying). A line longer
 * than `maxLineBytes` is dropped (reported through `onOversize`, with its first and last bytes so
 * the reader can tell which call it answered) and the stream resynchronises at the next newline.
 */
export interface LineDecoderOptions {
  /** Largest accepted line in bytes (without the newline). Default 256 MiB. */
  maxLineBytes?: number;
  /** Called for a dropped oversize line with its size in bytes and its first and last bytes. */
  onOversize?: (bytes: number, ends: OversizeEnds) => void;
}

/** Up to EDGE_BYTES of each end of a dropped line (a trailing "\r" included). */
export interface OversizeEnds {
  head: Buffer;
  tail: Buffer;
}

export const DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024;

/** How much of each end of a dropped line is kept: enough for a JSON-RPC envelope's id. */
const EDGE_BYTES = 128;

const NOT_BLANK = /\S/;

export class LineDecoder {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;
  /** While discarding: the dropped line's first and (so far) last bytes. */
  private head: Buffer = Buffer.alloc(0);
  private tail: Buffer = Buffer.alloc(0);
  private readonly maxLineBytes: number;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly options: LineDecoderOptions = {},
  ) {
    this.maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** Feed a chunk (Buffer or string); calls `onLine` for each complete line. */
  push(chunk: Buffer | string): void {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    for (;;) {
      const nl = buf.indexOf(0x0a);
      if (nl === -1) {
        this.append(buf);
        return;
      }
      if (this.size === 0 && !this.discarding) {
        // The usual case, a whole line inside this chunk: decoded straight from it, no copy
        // (each copy is an allocation on the path of every answer and notification).
        if (nl <= this.maxLineBytes) this.deliver(buf, nl);
        else this.options.onOversize?.(nl, { head: firstBytes([buf.subarray(0, nl)]), tail: lastBytes([buf.subarray(0, nl)]) });
      } else {
        this.append(buf.subarray(0, nl));
        this.emitLine();
      }
      buf = buf.subarray(nl + 1);
    }
  }

  /** End of stream: a final line without newline is still delivered. */
  end(): void {
    if (this.size > 0 || this.discarding) this.emitLine();
  }

  private append(part: Buffer): void {
    if (part.length === 0) return;
    if (this.discarding) {
      this.size += part.length;
      this.tail = lastBytes([this.tail, part]);
      return;
    }
    if (this.size + part.length > this.maxLineBytes) {
      this.discarding = true;
      this.head = firstBytes([...this.parts, part]);
      this.tail = lastBytes([...this.parts, part]);
      this.parts = [];
      this.size += part.length;
      return;
    }
    // Copy: the caller may reuse the chunk's memory.
    this.parts.push(Buffer.from(part));
    this.size += part.length;
  }

  private emitLine(): void {
    if (this.discarding) {
      const size = this.size;
      const ends = { head: this.head, tail: this.tail };
      this.discarding = false;
      this.parts = [];
      this.size = 0;
      this.head = this.tail = Buffer.alloc(0);
      this.options.onOversize?.(size, ends);
      return;
    }
    const whole = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.deliver(whole, whole.length);
  }

  /** Hand on `bytes[0, end)` as a line: a trailing "\r" dropped, a blank line skipped. */
  private deliver(bytes: Buffer, end: number): void {
    if (end > 0 && bytes[end - 1] === 0x0d) end -= 1;
    const line = bytes.toString('utf8', 0, end);
    if (NOT_BLANK.test(line)) this.onLine(line);
  }
}

/** A copy of the first EDGE_BYTES of the parts, in order. */
function firstBytes(parts: Buffer[]): Buffer {
  const out: Buffer[] = [];
  let n = 0;
  for (const p of parts) {
    if (n >= EDGE_BYTES) break;
    const take = p.subarray(0, EDGE_BYTES - n);
    out.push(take);
    n += take.length;
  }
  return Buffer.concat(out, n); // concat copies: the caller may reuse the chunk's memory
}

/** A copy of the last EDGE_BYTES of the parts, in order. */
function lastBytes(parts: Buffer[]): Buffer {
  const out: Buffer[] = [];
  let n = 0;
  for (let i = parts.length - 1; i >= 0 && n < EDGE_BYTES; i--) {
    const p = parts[i]!;
    const take = p.subarray(Math.max(0, p.length - (EDGE_BYTES - n)));
    out.unshift(take);
    n += take.length;
  }
  return Buffer.concat(out, n);
}

/** Serialise one message as one line. JSON.stringify never emits a raw newline. */
export function encodeMessage(message: unknown): string {
  return JSON.stringify(message) + '\n';
}
