/**
 * Newline-delimited framing (one JSON-RPC message per line, UTF-8, "\n", a trailing "\r" tolerated).
 *
 * Bytes are buffered and split on 0x0A before decoding. 0x0A never occurs inside a multi-byte
 * UTF-8 sequence, so a character split across chunks is decoded whole. Chunks of a long line are
 * kept in a list and joined once when its newline arrives (no quadratic re-copying). A line longer
 * than `maxLineBytes` is dropped (reported through `onOversize`) and the stream resynchronises at
 * the next newline.
 */
export interface LineDecoderOptions {
  /** Largest accepted line in bytes (without the newline). Default 256 MiB. */
  maxLineBytes?: number;
  /** Called for a dropped oversize line with its size in bytes. */
  onOversize?: (bytes: number) => void;
}

const NOT_BLANK = /\S/;

export class LineDecoder {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;
  private readonly maxLineBytes: number;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly options: LineDecoderOptions = {},
  ) {
    this.maxLineBytes = options.maxLineBytes ?? 256 * 1024 * 1024;
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
        else this.options.onOversize?.(nl);
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
      return;
    }
    if (this.size + part.length > this.maxLineBytes) {
      this.discarding = true;
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
      this.discarding = false;
      this.parts = [];
      this.size = 0;
      this.options.onOversize?.(size);
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

/** Serialise one message as one line. JSON.stringify never emits a raw newline. */
export function encodeMessage(message: unknown): string {
  return JSON.stringify(message) + '\n';
}
