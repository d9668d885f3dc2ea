import type { JsonValue } from './protocol';

/** The plain shape of an error as it crosses process/context boundaries. */
export interface SidecarErrorShape {
  code: number;
  message: string;
  data?: JsonValue | undefined;
}

/**
 * A JSON-RPC error answered by the sidecar (`code` from docs/protocol.md), or one produced by the
 * bridge itself (`ClientErrorCode`: timeout, cancelled, sidecar exited, ...).
 *
 * `instanceof SidecarError` also recognises errors re-created in another JavaScript realm (the
 * renderer's main world, where the preload rebuilds them): it checks the shape, not the prototype.
 */
export class SidecarError extends Error implements SidecarErrorShape {
  readonly code: number;
  readonly data: JsonValue | undefined;
  /** The method of the call that failed, when known. */
  readonly method: string | undefined;

  constructor(code: number, message: string, data?: JsonValue, options?: { method?: string; cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'SidecarError';
    this.code = code;
    this.data = data;
    this.method = options?.method;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return isSidecarErrorLike(value);
  }

  toJSON(): SidecarErrorShape {
    return this.data === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, data: this.data };
  }

  static from(shape: SidecarErrorShape, method?: string): SidecarError {
    return new SidecarError(shape.code, shape.message, shape.data, method === undefined ? undefined : { method });
  }
}

export function isSidecarErrorLike(value: unknown): value is SidecarError {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { name?: unknown; code?: unknown; message?: unknown };
  return v.name === 'SidecarError' && typeof v.code === 'number' && typeof v.message === 'string';
}
