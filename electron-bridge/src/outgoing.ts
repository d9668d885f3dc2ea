/**
 * The lines a connection has yet to write, in order.
 *
 * Thousands of calls can wait behind a full pipe (an app creating a playlist's tasks one call
 * each), and every call that ends, answered, timed out or aborted, drops its line if it is still
 * waiting. Both taking the next line and dropping one are O(1): a dropped line is only marked,
 * and skipped when its turn comes.
 */
export interface OutgoingLine {
  /** The request's id; undefined for a notification. */
  id: number | undefined;
  method: string;
  line: string;
}

interface Entry extends OutgoingLine {
  dropped: boolean;
}

/** Taken lines are cleared from the front in one slice once they are this many and half the array. */
const COMPACT_AFTER = 1024;

export class OutgoingQueue {
  private entries: Array<Entry | undefined> = [];
  private head = 0;
  private readonly waitingById = new Map<number, Entry>();
  private live = 0;

  /** How many lines are waiting (dropped ones not counted). */
  get size(): number {
    return this.live;
  }

  push(line: OutgoingLine): void {
    const entry: Entry = { ...line, dropped: false };
    this.entries.push(entry);
    if (entry.id !== undefined) this.waitingById.set(entry.id, entry);
    this.live += 1;
  }

  /** The next line to write, or undefined when none waits. */
  shift(): OutgoingLine | undefined {
    while (this.head < this.entries.length) {
      const entry = this.entries[this.head]!;
      this.entries[this.head] = undefined;
      this.head += 1;
      if (this.head >= COMPACT_AFTER && this.head * 2 >= this.entries.length) {
        this.entries = this.entries.slice(this.head);
        this.head = 0;
      }
      if (entry.dropped) continue;
      if (entry.id !== undefined) this.waitingById.delete(entry.id);
      this.live -= 1;
      return entry;
    }
    return undefined;
  }

  /** Drop the waiting line of request `id`; false if it was written already (or never queued). */
  drop(id: number): boolean {
    const entry = this.waitingById.get(id);
    if (entry === undefined) return false;
    entry.dropped = true;
    this.waitingById.delete(id);
    this.live -= 1;
    return true;
  }

  /** Take every waiting line at once, in order (the connection closed). */
  takeAll(): OutgoingLine[] {
    const rest: OutgoingLine[] = [];
    for (let line = this.shift(); line !== undefined; line = this.shift()) rest.push(line);
    this.entries = [];
    this.head = 0;
    return rest;
  }
}
